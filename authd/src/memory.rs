//! Giving back the memory only start-up needed.
//!
//! Start-up runs a lot of code once — configuration and YAML parsing, the users file, client
//! snippets, database migrations, keys, templates — and the kernel reads an executable's code
//! from disk in read-ahead runs and maps up to 64 KiB of cached code around each page touched
//! ("fault-around"). So right after start-up most of the daemon's 13 MB of code is resident,
//! although serving uses a few MB of it.
//!
//! Once ready, the daemon
//! - marks the mappings of its own executable `MADV_RANDOM`: a page of code read from disk
//!   later is read alone, not with its neighbours (kernels with 2025's read-ahead change for
//!   code, such as 6.18, ignore this for executable mappings and read a read-ahead window
//!   anyway: `bench/residency.py readaround` shows which way a kernel goes);
//! - asks the kernel to reclaim their pages (`MADV_PAGEOUT`, Linux 5.4 and later), and to drop
//!   the executable's other cached pages (`POSIX_FADV_DONTNEED`, once more a second later,
//!   see [`drop_cached_executable`]), which fault-around would otherwise map again;
//! - asks glibc to return freed heap to the kernel (`malloc_trim`).
//!
//! Reclaim never discards data: a clean file page is dropped and read again on its next use.
//! Only mappings of the executable that are not writable and hold no private (copy-on-write)
//! pages are advised, so nothing goes to swap. The price is paid once per code path: the first
//! request of a kind the daemon has not served since start-up reads its code from disk
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
    drop_cached_executable();
    trim_heap();
    advised
}

/// Returns freed heap to the kernel: glibc keeps what a burst of work freed (connection
/// buffers of a login flood, start-up's parsing) resident otherwise. Called after start-up and
/// when the password workers have freed their last argon2 buffer.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory; it takes the allocator's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the executable's cached pages that no process maps (`POSIX_FADV_DONTNEED`), so that
/// fault-around does not map them again with the next page of code the daemon runs. Right
/// after `MADV_PAGEOUT` most of them cannot be dropped yet, so the daemon calls this once more
/// a second after start-up. Measured with `fincore` on the demo daemon (Linux 6.18, ext4):
/// 11.5–12.6 MiB of the executable's 13 MiB of code stay cached after the first call, 2.7 to
/// 11.8 MiB after the second — a large page-cache folio that is partly mapped again (code run
/// since) cannot be dropped.
pub fn drop_cached_executable() {
    if let Ok(exe) = std::fs::File::open("/proc/self/exe") {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a file descriptor we own for its duration;
        // POSIX_FADV_DONTNEED only drops clean cached pages.
        unsafe {
            libc::posix_fadvise(exe.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
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

    /// Pages of the executable's file in the page cache, among its last `len` bytes.
    fn cached_tail_pages(exe: &std::fs::File, len: usize) -> usize {
        use std::os::fd::AsRawFd;
        let size = exe.metadata().unwrap().len() as usize;
        let page = 4096;
        let start = (size - len) / page * page;
        let len = size - start;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a fresh read-only shared mapping of our own open file, never dereferenced;
        // mincore only writes one byte per page into `vec`, which is long enough; unmapped
        // before returning.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                exe.as_raw_fd(),
                start as libc::off_t,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.iter().filter(|v| **v & 1 == 1).count()
    }

    #[test]
    fn drops_cached_pages_of_the_executable_that_nothing_maps() {
        use std::io::{Read, Seek, SeekFrom};
        // The test binary's tail (symbols, debug information) is never mapped: read it into
        // the page cache, then drop it.
        let mut exe = std::fs::File::open("/proc/self/exe").unwrap();
        let tail = 256 * 1024;
        exe.seek(SeekFrom::End(-(tail as i64))).unwrap();
        let mut buf = Vec::new();
        exe.read_to_end(&mut buf).unwrap();
        assert!(cached_tail_pages(&exe, tail) >= 60);
        drop_cached_executable();
        assert_eq!(cached_tail_pages(&exe, tail), 0);
    }
}
