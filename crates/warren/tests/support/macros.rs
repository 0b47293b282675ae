//! Test generators: one `#[test]` per server model.

/// One `#[test]` per server model, each calling `$check(model)`.
#[allow(unused_macros)]
macro_rules! per_model {
    ($check:expr) => {
        #[test]
        fn iterative() {
            $check("iterative")
        }
        per_concurrent_model!($check);
    };
}

/// One `#[test]` per model that serves connections concurrently (every model but `iterative`).
#[allow(unused_macros)]
macro_rules! per_concurrent_model {
    ($check:expr) => {
        #[test]
        fn thread() {
            $check("thread")
        }
        #[test]
        fn pool() {
            $check("pool")
        }
        #[test]
        fn fork() {
            $check("fork")
        }
        #[test]
        fn prefork() {
            $check("prefork")
        }
        #[test]
        fn event() {
            $check("event")
        }
        #[test]
        fn green() {
            $check("green")
        }
        #[test]
        fn hybrid() {
            $check("hybrid")
        }
    };
}
