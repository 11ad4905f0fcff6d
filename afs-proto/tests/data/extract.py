#!/usr/bin/env python3
"""Copies selected frames of the OpenAFS 1.8.9 captures into small pcaps.

Usage: extract.py CAPTURE_DIR   (the shared captures directory)
Frame numbers (1-based) are those of the *.pcap.txt summaries.
Only run when regenerating the test data; tests never read CAPTURE_DIR.
"""
import struct, sys

SUBSETS = {
    # first afsio process: VL lookups, FetchStatus, CB calls, FetchData of hello.txt
    "anon-read-first.pcap": ("anon-read.pcap", range(1, 51)),
    # whole file is 44 KB: contains the 14,336-byte dir200 blob reply
    "anon-dir.pcap": ("anon-dir.pcap", None),
    # CreateFile, first StoreData64 request packet + its reply, MakeDir,
    # Symlink, RemoveFile, RemoveDir (requests and replies)
    "anon-write-ops.pcap": ("anon-write.pcap", [42, 43, 45, 268, 295, 296, 323, 324, 351, 352, 379, 380]),
    # TellMeAboutYourself / InitCallBackState3 + the CallBack (204) request and reply
    "callback-break-cb.pcap": ("callback-break.pcap", [13, 14, 16, 17, 229, 243]),
}

def main(capdir):
    for out, (src, frames) in SUBSETS.items():
        data = open(f"{capdir}/{src}", "rb").read()
        res, off, n = [data[:24]], 24, 0
        while off + 16 <= len(data):
            incl = struct.unpack("<I", data[off + 8:off + 12])[0]
            n += 1
            if frames is None or n in frames:
                res.append(data[off:off + 16 + incl])
            off += 16 + incl
        open(out, "wb").write(b"".join(res))

if __name__ == "__main__":
    main(sys.argv[1])
