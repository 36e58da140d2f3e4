#!/usr/bin/env python3
"""Where the daemon's file-backed memory (RssFile) comes from.

    bench/residency.py crates PID BINARY_WITH_SYMBOLS [--top N]
    bench/residency.py readaround FILE

`crates` reads /proc/PID/maps and /proc/PID/pagemap (the "present" bit; needs the same user
or root) for the mappings of the process's executable, and attributes each resident page to
the symbols of BINARY_WITH_SYMBOLS (the same build unstripped: `cargo build --profile
profiling`) that overlap it. Output: resident KiB per section and per crate (the first path
segment of the demangled symbol), largest first.

`readaround` shows what one page fault in an `MADV_RANDOM` mapping of FILE costs, for a plain
read-only mapping and for an executable one: it drops FILE's cached pages, touches one page
in every MiB, and reports how much the kernel read (page cache, by mincore) and mapped
(the mapping's Rss). Kernels with 2025's read-ahead change for code (6.18 here) ignore
MADV_RANDOM for executable mappings: each fault reads the device's read-ahead window
(`read_ahead_kb`), and fault-around then maps up to 64 KiB of cached code around the page.
That is what a login's first run of its code costs in RSS (README, "Memory").
"""

import bisect
import collections
import os
import re
import struct
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
STRIDE = 1 << 20  # readaround: one page touched per MiB


def sections(binary: str) -> list[tuple[str, int, int, int]]:
    """(name, vaddr, file offset, size) of the allocated sections."""
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    res = []
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
        if m and "A" in m.group(5):
            res.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16)))
    return res


def symbols(binary: str) -> list[tuple[int, int, str]]:
    """(vaddr, size, crate) sorted by address."""
    out = subprocess.run(["nm", "-S", "-C", "--defined-only", binary], capture_output=True, text=True,
                         check=True).stdout
    res = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4:
            continue
        try:
            addr, size = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            continue
        name = parts[3]
        res.append((addr, size, crate_of(name)))
    res.sort()
    return res


def crate_of(name: str) -> str:
    name = name.lstrip("<&*").removeprefix("dyn ").removeprefix("mut ")
    if "::" in name:
        return name.split("::", 1)[0]
    if name.startswith(("sqlite3", "Sqlite", "btree", "pager", "vdbe")):
        return "sqlite3 (C)"
    if name.startswith("ring_core_") or name.startswith(("ecp_nistz256", "ge_", "fe_", "x25519")):
        return "ring (C/asm)"
    # Mostly SQLite's internal (static) functions, whose names carry no prefix.
    return "other C (mostly SQLite)"


def resident_file_offsets(pid: int, exe_ino: int) -> list[int]:
    """File offsets of the executable's resident pages in process pid."""
    offsets = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in maps:
            f = line.split()
            if len(f) < 6 or int(f[4]) != exe_ino:
                continue
            start, end = (int(x, 16) for x in f[0].split("-"))
            off = int(f[2], 16)
            n = (end - start) // PAGE
            pm.seek(start // PAGE * 8)
            data = pm.read(n * 8)
            for i in range(n):
                (entry,) = struct.unpack_from("<Q", data, i * 8)
                if entry >> 63 & 1:
                    offsets.append(off + i * PAGE)
    return offsets


def cached_bytes(path: str) -> int:
    """Bytes of path in the page cache (mincore over a shared read-only mapping)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        n = (size + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * n)()
        rc = libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec)
        libc.munmap(ctypes.c_void_p(addr), size)
        if rc != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(v & 1 for v in vec) * PAGE
    finally:
        os.close(fd)


def readaround(path: str) -> int:
    import mmap
    size = min(os.path.getsize(path) // STRIDE * STRIDE, 16 << 20)
    touches = size // STRIDE
    if touches < 4:
        print(f"{path} is too small: at least 4 MiB", file=sys.stderr)
        return 2
    print(f"{path}: one page touched in every MiB of the first {size >> 20} MiB ({touches} pages), MADV_RANDOM; "
          f"kernel {os.uname().release}, read_ahead_kb {read_ahead_kb(path)}")
    for kind, prot in (("read-only", mmap.PROT_READ), ("executable", mmap.PROT_READ | mmap.PROT_EXEC)):
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        before = cached_bytes(path)
        m = mmap.mmap(fd, size, prot=prot)
        m.madvise(mmap.MADV_RANDOM)
        for off in range(0, size, STRIDE):
            m[off]
        read = cached_bytes(path) - before
        rss = mapping_rss(path)
        m.close()
        os.close(fd)
        print(f"  {kind:10} mapping: read {read >> 10:6,} KiB ({read / touches / 1024:5.1f} per fault), "
              f"mapped {rss:6,} KiB ({rss / touches:5.1f} per fault)")
    return 0


def read_ahead_kb(path: str) -> str:
    dev = os.stat(path).st_dev
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for q in (f"{base}/queue/read_ahead_kb", f"{base}/../queue/read_ahead_kb"):
        try:
            with open(q) as f:
                return f.read().strip()
        except OSError:
            continue
    return "unknown"


def mapping_rss(path: str) -> int:
    """Rss (KiB) of this process's mappings of path."""
    ino = os.stat(path).st_ino
    total, current = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                current = len(parts) >= 6 and parts[4].isdigit() and int(parts[4]) == ino
            elif current and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "readaround":
        return readaround(sys.argv[2])
    if len(sys.argv) < 4 or sys.argv[1] != "crates":
        print(__doc__, file=sys.stderr)
        return 2
    pid, binary = int(sys.argv[2]), sys.argv[3]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    exe_ino = os.stat(f"/proc/{pid}/exe").st_ino
    secs = sections(binary)
    syms = symbols(binary)
    addrs = [s[0] for s in syms]
    by_section: collections.Counter = collections.Counter()
    by_crate: collections.Counter = collections.Counter()
    offsets = resident_file_offsets(pid, exe_ino)
    for fo in offsets:
        for name, vaddr, foff, size in secs:
            lo, hi = max(fo, foff), min(fo + PAGE, foff + size)
            if name == ".bss" or hi <= lo:
                continue
            by_section[name] += hi - lo
            if name not in (".text", ".rodata", ".data.rel.ro", ".data"):
                continue
            v_lo, v_hi = lo - foff + vaddr, hi - foff + vaddr
            attributed = 0
            i = max(bisect.bisect_right(addrs, v_lo) - 1, 0)
            while i < len(syms) and syms[i][0] < v_hi:
                a, sz, crate = syms[i]
                ov = min(a + sz, v_hi) - max(a, v_lo)
                if ov > 0:
                    by_crate[(name, crate)] += ov
                    attributed += ov
                i += 1
            if attributed < hi - lo:
                by_crate[(name, "unattributed (padding, anonymous constants)")] += hi - lo - attributed
    total = len(offsets) * PAGE
    print(f"resident pages of the executable: {total // 1024:,} KiB")
    print("by section (KiB):")
    for name, b in by_section.most_common():
        print(f"  {name:24} {b // 1024:8,}")
    print(f"by crate, top {top} (KiB):")
    for (sec, crate), b in by_crate.most_common(top):
        print(f"  {sec:14} {crate:48} {b // 1024:6,}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        print(f"residency.py: {e}", file=sys.stderr)
        sys.exit(1)
