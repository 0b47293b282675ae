//! The executable's relocated read-only data, shared with forked children as file pages.
//!
//! A position-independent executable's vtables, panic locations and other tables of pointers
//! live in its RELRO segment: written once by the dynamic linker as it relocates them, then
//! made read-only. Those writes made every page of it private anonymous memory, and `fork`
//! copies the page table entries of anonymous memory into each child, so every forked
//! connection process counted the whole segment in its RSS (about 880 KiB in a binary that
//! also carries the Wasm host and the switch), whether it read it or not.
//!
//! [`share`] copies the segment, as relocated, into a memfd and maps that over it, shared and
//! read-only: the same bytes at the same addresses, now file pages. `fork` does not copy the
//! entries of a shared file mapping, so a child maps only the pages it reads, on first read.
//! Chromium shares its RELRO between Android processes the same way (`ANDROID_DLEXT_USE_RELRO`).

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::sync::OnceLock;

use nix::libc;

/// Share the executable's RELRO once per process (later calls return the first outcome):
/// `Ok(true)` when it now lies in a shared memfd mapping, `Ok(false)` when there is nothing to
/// share (no RELRO, or less than a page of it).
pub(crate) fn share() -> io::Result<bool> {
    static DONE: OnceLock<Result<bool, io::ErrorKind>> = OnceLock::new();
    DONE.get_or_init(|| share_now().map_err(|e| e.kind())).map_err(io::Error::from)
}

/// The executable's RELRO range as the dynamic linker protected it: start rounded down, end
/// rounded down to a page (the partial page after it stays writable, with `.data`).
fn relro_range() -> Option<(usize, usize)> {
    unsafe extern "C" fn first_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and `data`
        // is the `Option` `relro_range` lent it.
        let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<(usize, usize)>>()) };
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
            let header = unsafe { &*info.dlpi_phdr.add(i) };
            if header.p_type == libc::PT_GNU_RELRO {
                let start = info.dlpi_addr as usize + header.p_vaddr as usize;
                *found = Some((start, start + header.p_memsz as usize));
            }
        }
        1 // The executable comes first; stop there.
    }
    let mut found: Option<(usize, usize)> = None;
    // SAFETY: the callback only reads what it is given and writes `found`.
    unsafe { libc::dl_iterate_phdr(Some(first_object), (&raw mut found).cast()) };
    let page = page_size();
    found.map(|(start, end)| (start & !(page - 1), end & !(page - 1)))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

fn share_now() -> io::Result<bool> {
    let Some((start, end)) = relro_range() else { return Ok(false) };
    let Some(len) = NonZeroUsize::new(end.saturating_sub(start)) else { return Ok(false) };
    let memfd = nix::sys::memfd::memfd_create(c"warren-relro", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    // SAFETY: [start, end) is mapped and readable (the linker protected it read-only and nothing
    // unmaps it); it is only read here.
    let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, len.get()) };
    let file = std::fs::File::from(memfd);
    std::io::Write::write_all(&mut &file, bytes)?;
    let at = NonZeroUsize::new(start).expect("a mapped address is not null");
    // SAFETY: replaces [start, end) with a read-only shared mapping of a file that holds exactly
    // the bytes it held, in one call: a reader on another thread sees the old page or the new,
    // never anything else, and nothing writes this range (it is read-only already).
    let mapped = unsafe {
        nix::sys::mman::mmap(
            Some(at),
            len,
            nix::sys::mman::ProtFlags::PROT_READ,
            nix::sys::mman::MapFlags::MAP_SHARED | nix::sys::mman::MapFlags::MAP_FIXED,
            &file,
            0,
        )?
    };
    if mapped.as_ptr() as usize != start {
        return Err(io::Error::other("the RELRO copy was mapped at another address"));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relro_becomes_a_shared_memfd_mapping_with_the_same_bytes() {
        let (start, end) = relro_range().expect("a PIE test binary has a RELRO segment");
        assert!(end > start, "at least a page of RELRO");
        // SAFETY: the range is mapped and readable before and after `share`.
        let before = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec();
        assert!(share().unwrap(), "shared");
        assert!(share().unwrap(), "a second call returns the first outcome");
        // SAFETY: as above.
        let after = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        assert!(before == after, "the shared copy holds the relocated bytes");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| usize::from_str_radix(l.split('-').next().unwrap(), 16).unwrap() == start)
            .expect("a mapping starts at the RELRO");
        assert!(line.contains("memfd:warren-relro") && line.contains(" r--s "), "{line}");
        // Vtables still work: a trait object call and a formatted panic location.
        let shown: Box<dyn std::fmt::Display> = Box::new(42);
        assert_eq!(shown.to_string(), "42");
        assert!(std::panic::Location::caller().file().ends_with("relro.rs"));
    }
}
