//! Giving back the memory only start-up needed.
//!
//! Start-up runs a lot of code once — configuration and YAML parsing, the users file, client
//! snippets, database migrations, keys, templates — and the kernel maps an executable's pages
//! in 64 KiB runs around each page touched ("fault-around") and reads them from disk in
//! 128 KiB runs ("read-around"). So right after start-up most of the daemon's 13 MB of code is
//! resident, although serving uses a few MB of it (`bench/run.sh` measured 14 MB of mapped
//! code after start-up, 4.7 MB once this has run and forward auth and a login have been served).
//!
//! Once ready, the daemon
//! - marks the mappings of its own executable `MADV_RANDOM`: a page read from disk later is
//!   read alone, not with its neighbours (so fault-around finds no cached neighbours to map);
//! - asks the kernel to reclaim their pages (`MADV_PAGEOUT`, Linux 5.4 and later), and to drop
//!   the executable's other cached pages (`POSIX_FADV_DONTNEED`), which fault-around would
//!   otherwise map again;
//! - asks glibc to return freed heap to the kernel (`malloc_trim`).
//!
//! Reclaim never discards data: a clean file page is dropped and read again on its next use.
//! Only mappings of the executable that are not writable and hold no private (copy-on-write)
//! pages are advised, so nothing goes to swap. The price is paid once per code path: the first
//! request of a kind the daemon has not served since start-up reads its code page by page
//! (on the VM the benchmark runs on, the first login after start took 0.21 s instead of 0.16 s).
//! Failures are ignored: this only changes how much memory the idle daemon holds, never what
//! it does.
//!
//! This is the crate's only `unsafe` code: libc calls whose arguments come from the kernel's
//! own description of this process (`/proc/self/smaps`).
#![allow(unsafe_code)]

use std::os::unix::fs::MetadataExt;

/// A read-only mapping of the executable with no private pages: `(start, length)`.
fn clean_executable_mappings() -> Vec<(usize, usize)> {
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return Vec::new();
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // `start-end perms offset dev inode path`
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).and_then(|i| i.parse::<u64>().ok());
            current = (inode == Some(exe.ino()) && !perms.contains('w') && end > start)
                .then_some((start, end - start));
        } else if first == "Anonymous:" {
            let anonymous_kb = fields.next().and_then(|v| v.parse::<u64>().ok());
            if let (Some(m), Some(0)) = (current.take(), anonymous_kb) {
                out.push(m);
            }
        }
    }
    out
}

/// Returns start-up's memory to the kernel (see the module docs); the bytes of executable
/// mappings advised, for the log.
pub fn release_startup_memory() -> usize {
    let mut advised = 0;
    for (start, len) in clean_executable_mappings() {
        // SAFETY: the range is a whole mapping of this process as the kernel lists it;
        // MADV_RANDOM only changes read-ahead, MADV_PAGEOUT only asks for reclaim: contents
        // stay as they are (clean file pages are re-read on use). No Rust reference is
        // invalidated by either.
        let rc = unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_RANDOM);
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT)
        };
        if rc == 0 {
            advised += len;
        }
    }
    // Pages of the executable in the page cache that this process never mapped (cached by an
    // earlier run or the build) would otherwise be mapped by fault-around again.
    if let Ok(exe) = std::fs::File::open("/proc/self/exe") {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a file descriptor we own for its duration;
        // POSIX_FADV_DONTNEED only drops clean cached pages.
        unsafe {
            libc::posix_fadvise(exe.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory; it takes the allocator's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_code_and_keeps_its_contents() {
        let maps = clean_executable_mappings();
        assert!(
            maps.iter().map(|m| m.1).sum::<usize>() > 100 * 1024,
            "{maps:?}"
        );
        // This function's own code lies in one of them (it is executable and clean).
        let here = finds_the_executable_code_and_keeps_its_contents as *const () as usize;
        assert!(
            maps.iter().any(|(s, l)| (*s..s + l).contains(&here)),
            "{maps:?}"
        );
        let text = std::hint::black_box(String::from("still here"));
        assert!(release_startup_memory() > 0);
        // Code paged out runs again (this call), data is untouched.
        assert_eq!(clean_executable_mappings().len(), maps.len());
        assert_eq!(text, "still here");
    }
}
