//! Starting a service's program, as cheaply as its settings allow.
//!
//! Two paths:
//! - **vfork-style clone** (`clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, see [`vfork_exec`]) for
//!   every `nowait` service with nothing to change in the child: no page table is copied however
//!   large the node is, the child does only what inetd's contract needs (its signal dispositions
//!   and mask, the connection on fds 0 and 1, `execve`), and the kernel hands back the pidfd the
//!   node's loop waits on. It is what `warren bench superd` measures. glibc's `posix_spawn`,
//!   used before, did the same clone but also reset all 64 signal dispositions one by one (about
//!   120 `rt_sigaction` calls per child), mapped and unmapped a stack per spawn, and std added
//!   descriptor duplicates and `prlimit` calls; the node then opened the pidfd separately.
//! - **clone without `CLONE_VM`** (a fork, plus namespace flags) when the child must change
//!   itself before `execve`: `wait` services (the listener on fd 3 and `LISTEN_PID`, which only
//!   the child knows), user and group, nice, umask, rlimits and the sandbox. The child runs only
//!   async-signal-safe system calls on data prepared here, reports a failure through a
//!   close-on-exec pipe, and execs. Copying the page tables costs tens of microseconds for a
//!   small node; the settings are worth it.
//!
//! Every child dies with the node: it asks the kernel for SIGKILL when its parent dies
//! ([`die_with_node`]), so a node killed with SIGKILL (or crashing) leaves no child serving
//! connections nobody counts, holding a `wait` listener nobody will take back, or keeping a
//! cgroup busy. SIGKILL rather than SIGTERM: nobody is left to follow a SIGTERM with a SIGKILL,
//! and a pid namespace's init ignores SIGTERM without a handler. A node that stops normally
//! drains first (SIGTERM, grace, SIGKILL). xinetd's children outlive xinetd, because xinetd
//! does not track them beyond counting; the node's limits (`instances`, `per_source`, the
//! sandbox's cgroups) are only true while the node watches every child, so no setting keeps
//! them alive.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::libc;
use nix::sched::CloneFlags;

use crate::config::{Credentials, Exec};
use crate::sandbox::Prepared;

mod vfork;

use self::vfork::vfork_exec;

/// What the child gets on its standard input and output.
#[derive(Debug, Clone, Copy)]
pub enum Handoff<'a> {
    /// A connection (`nowait`): fds 0 and 1.
    Conn(BorrowedFd<'a>),
    /// The listening socket (`wait`): fds 0, 1 and 3, with `LISTEN_FDS=1` and `LISTEN_PID`.
    Listener(BorrowedFd<'a>),
}

/// Start `exec` with `env` (already complete but for `LISTEN_PID`); returns the child's pid and
/// a pidfd for it, which becomes readable when the child exits.
pub fn spawn(
    exec: &Exec,
    handoff: Handoff<'_>,
    env: Vec<(OsString, OsString)>,
    sandbox: Option<&Prepared>,
) -> io::Result<(u32, OwnedFd)> {
    let plain = exec.process.is_empty() && sandbox.is_none() && exec.user.as_ref().is_none_or(is_current);
    if let Handoff::Conn(fd) = handoff {
        // Accepted non-blocking; a program started by inetd reads and writes a blocking socket.
        blocking(fd)?;
    }
    match handoff {
        // A bare name (no slash) keeps std's PATH search; xinetd itself wants absolute paths.
        Handoff::Conn(fd) if plain && !exec.program.as_os_str().as_bytes().contains(&b'/') => {
            tracked(command_spawn(exec, fd, env)?)
        }
        // The kernel hands back the pidfd with the child (CLONE_PIDFD): no window.
        Handoff::Conn(fd) if plain => vfork_exec(exec, fd, &env),
        _ => tracked(clone_exec(exec, handoff, env, sandbox)?),
    }
}

/// `pid` with its pidfd; a child whose pidfd cannot be opened (no descriptor left) is killed
/// and reaped rather than left running where the node cannot see it exit or count it.
fn tracked(pid: u32) -> io::Result<(u32, OwnedFd)> {
    match pidfd(pid) {
        Ok(fd) => Ok((pid, fd)),
        Err(e) => {
            kill_and_reap(pid);
            Err(io::Error::new(e.kind(), format!("cannot watch child {pid}, stopped it: {e}")))
        }
    }
}

/// Stop a child of this process that the node cannot watch, and reap it.
pub fn kill_and_reap(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Clear `O_NONBLOCK` on the connection's file description (shared with the child).
fn blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Whether switching to `who` would change nothing.
fn is_current(who: &Credentials) -> bool {
    !who.supplementary && who.uid == nix::unistd::geteuid().as_raw() && who.gid == nix::unistd::getegid().as_raw()
}

/// std's spawn (glibc `posix_spawnp`), for a program named without a slash: it searches `PATH`.
fn command_spawn(exec: &Exec, fd: BorrowedFd<'_>, env: Vec<(OsString, OsString)>) -> io::Result<u32> {
    let mut command = Command::new(&exec.program);
    command.arg0(&exec.argv[0]).args(&exec.argv[1..]).env_clear().envs(env);
    command.stdin(Stdio::from(fd.try_clone_to_owned()?)).stdout(Stdio::from(fd.try_clone_to_owned()?));
    let node = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the forked child before `execve` and makes only the
    // async-signal-safe system calls of `die_with_node`. (It makes std fork instead of
    // `posix_spawnp`, for programs named without a slash only.)
    unsafe { command.pre_exec(move || die_with_node(|| libc::getppid() != node)) };
    // The child is reaped through its pidfd by the node, never through this handle.
    Ok(command.spawn()?.id())
}

/// Everything the child needs, prepared before the clone so that it allocates nothing.
struct Plan {
    program: CString,
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for the digits the child writes.
    listen_pid: Option<Vec<u8>>,
    fd: RawFd,
    fd3: bool,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    nice: Option<i32>,
    umask: Option<u32>,
    ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    cgroup_procs: Vec<RawFd>,
    user_maps: Option<(Vec<u8>, Vec<u8>)>,
    private_mounts: bool,
    report: RawFd,
    /// The parent's end of the report pipe, which the child closes: once it has, the pipe has
    /// a reader only while the node lives.
    report_read: RawFd,
}

fn clone_exec(
    exec: &Exec,
    handoff: Handoff<'_>,
    env: Vec<(OsString, OsString)>,
    sandbox: Option<&Prepared>,
) -> io::Result<u32> {
    let cstring =
        |b: &[u8]| CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"));
    let program = cstring(exec.program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = exec.argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<_>>()?;
    let envs: Vec<CString> =
        env.iter().map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat())).collect::<io::Result<_>>()?;
    let (fd, fd3) = match handoff {
        Handoff::Conn(fd) => (fd.as_raw_fd(), false),
        Handoff::Listener(fd) => (fd.as_raw_fd(), true),
    };
    let mut listen_pid = fd3.then(|| {
        let mut slot = b"LISTEN_PID=".to_vec();
        slot.resize(slot.len() + 24, 0);
        slot
    });
    let mut env_ptrs: Vec<*const libc::c_char> = envs.iter().map(|c| c.as_ptr()).collect();
    if let Some(slot) = &listen_pid {
        env_ptrs.push(slot.as_ptr().cast());
    }
    env_ptrs.push(std::ptr::null());
    let ids = match &exec.user {
        Some(who) => Some((who.uid, who.gid, groups(who)?)),
        None => None,
    };
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Moving the slot into the plan keeps its heap buffer, which `env` already points at.
    let mut plan = Plan {
        program,
        argv: argv.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect(),
        env: env_ptrs,
        listen_pid: listen_pid.take(),
        fd,
        fd3,
        rlimits: exec.process.rlimits.iter().map(|(r, v)| (*r as _, v.unwrap_or(libc::RLIM_INFINITY))).collect(),
        nice: exec.process.nice,
        umask: exec.process.umask,
        ids,
        cgroup_procs: sandbox.map(|s| s.procs.iter().map(|f| f.as_raw_fd()).collect()).unwrap_or_default(),
        user_maps: sandbox.filter(|s| s.namespaces.user).map(|_| user_maps()),
        private_mounts: sandbox.is_some_and(|s| s.namespaces.mount),
        report: report_write.as_raw_fd(),
        report_read: report_read.as_raw_fd(),
    };
    let mut flags = CloneFlags::empty();
    if let Some(ns) = sandbox.map(|s| s.namespaces) {
        flags.set(CloneFlags::CLONE_NEWNS, ns.mount);
        flags.set(CloneFlags::CLONE_NEWPID, ns.pid);
        flags.set(CloneFlags::CLONE_NEWNET, ns.net);
        flags.set(CloneFlags::CLONE_NEWUSER, ns.user);
    }
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: without CLONE_VM the child has its own copy of this address space, and `child`
    // makes only async-signal-safe system calls on memory prepared above before `execve` or
    // `_exit`, so no lock another thread held at the clone is ever taken in the child.
    let pid = unsafe { nix::sched::clone(Box::new(|| child(&mut plan)), &mut stack, flags, Some(libc::SIGCHLD)) }?;
    drop(report_write);
    let mut errno = [0u8; 4];
    match nix::unistd::read(&report_read, &mut errno) {
        Ok(4) => {
            // The child failed before exec and has exited; it is reaped here, not by the node.
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        _ => Ok(pid.as_raw() as u32),
    }
}

/// The supplementary groups for `who`: its own (`groups = yes`) or only its primary group.
fn groups(who: &Credentials) -> io::Result<Vec<libc::gid_t>> {
    if !who.supplementary {
        return Ok(vec![who.gid]);
    }
    let name = CString::new(who.name.as_bytes()).map_err(|_| io::Error::other("NUL in user name"))?;
    let list = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(who.gid))?;
    Ok(list.into_iter().map(|g| g.as_raw()).collect())
}

/// `uid_map` and `gid_map` lines mapping root in the new user namespace to the node's ids.
fn user_maps() -> (Vec<u8>, Vec<u8>) {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    (format!("0 {uid} 1\n").into_bytes(), format!("0 {gid} 1\n").into_bytes())
}

/// The child, between clone and exec. Returns only on failure (its value is the exit status).
fn child(plan: &mut Plan) -> isize {
    // SAFETY: every call below is a raw, async-signal-safe system call on memory owned by this
    // (copied) address space; nothing allocates or takes a lock.
    unsafe {
        let fail = |report: RawFd| -> isize {
            let errno = *libc::__errno_location();
            libc::write(report, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        };
        libc::close(plan.report_read);
        for &procs in &plan.cgroup_procs {
            if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                return fail(plan.report);
            }
        }
        if let Some((uid_map, gid_map)) = &plan.user_maps {
            let files: [(&[u8], &[u8]); 3] = [
                (b"/proc/self/setgroups\0", b"deny"),
                (b"/proc/self/uid_map\0", uid_map),
                (b"/proc/self/gid_map\0", gid_map),
            ];
            for (path, content) in files {
                let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, content.as_ptr().cast(), content.len()) < 0 {
                    return fail(plan.report);
                }
                libc::close(fd);
            }
        }
        if plan.private_mounts
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
        {
            return fail(plan.report);
        }
        for &(resource, value) in &plan.rlimits {
            let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
            if libc::setrlimit(resource, &limit) != 0 {
                return fail(plan.report);
            }
        }
        if let Some(nice) = plan.nice {
            *libc::__errno_location() = 0;
            if libc::nice(nice) == -1 && *libc::__errno_location() != 0 {
                return fail(plan.report);
            }
        }
        if let Some(mask) = plan.umask {
            libc::umask(mask);
        }
        // Raw system calls, not glibc's set*id: in a multi-threaded process those broadcast the
        // change to every thread (`__nptl_setxid`), taking a lock that another thread of the
        // node may have held at the clone and waiting on threads that do not exist here.
        if let Some((uid, gid, groups)) = &plan.ids
            && (libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) != 0
                || libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid) != 0)
        {
            return fail(plan.report);
        }
        let targets: &[RawFd] = if plan.fd3 { &[0, 1, 3] } else { &[0, 1] };
        for &target in targets {
            if libc::dup2(plan.fd, target) < 0 {
                return fail(plan.report);
            }
        }
        if targets.contains(&plan.fd) {
            libc::fcntl(plan.fd, libc::F_SETFD, 0);
        }
        if let Some(slot) = &mut plan.listen_pid {
            write_decimal(&mut slot[b"LISTEN_PID=".len()..], libc::getpid() as u32);
        }
        // Rust ignores SIGPIPE; a program expects the default, as std's spawn also restores.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Last: a change of user or group clears the parent-death signal. The parent's pid is
        // 0 seen from a new pid namespace, so the report pipe tells whether the node lives.
        if die_with_node(|| node_gone(plan.report)).is_err() {
            return fail(plan.report);
        }
        libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.env.as_ptr());
        fail(plan.report)
    }
}

/// In a child between clone and `execve`: be sent SIGKILL when the node dies, and exit now if
/// `node_gone` says it died before that was armed (its children are then re-parented and no
/// signal would come). Async-signal-safe.
///
/// The kernel sends the signal when the *thread* that cloned the child exits, not the process:
/// children are started only by the node's loop thread, which lives as long as the node (its
/// end is the end of the drain), so the signal means the node is gone.
fn die_with_node(node_gone: impl Fn() -> bool) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if node_gone() {
        // SAFETY: _exit ends this child at once, running nothing of the node's.
        unsafe { libc::_exit(127) };
    }
    Ok(())
}

/// Whether the node has died, seen from a child holding only the write end `report` of the
/// report pipe: the pipe's last reader was the node (closed at its exit, before its children
/// are re-parented), and a write end without readers polls as `POLLERR`.
fn node_gone(report: RawFd) -> bool {
    let mut fd = libc::pollfd { fd: report, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut fd, 1, 0) == 1 && fd.revents & libc::POLLERR != 0 }
}

/// Write `n` in decimal followed by NUL into `into`, without allocating.
fn write_decimal(into: &mut [u8], mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        into[i] = *d;
    }
    into[len] = 0;
}

/// A pidfd for `pid`: readable once the child exits, so the node's loop learns of each exit
/// without SIGCHLD and without reaping anybody else's children.
pub fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests;
