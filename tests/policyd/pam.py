#!/usr/bin/env python3
"""pam.py - log in through real libpam, as a PAM service would (for the
policyd test: failures through the PAM module, one store with policyd).

    pam.py SERVICE USER RHOST PASSWORD...

One pam_start .. pam_authenticate .. pam_end per PASSWORD, with PAM_RHOST
set; prints one line per attempt: the pam_authenticate result's name
(PAM_SUCCESS, PAM_AUTH_ERR, ...). Run it under pam_wrapper
(LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=...).
"""
import ctypes
import ctypes.util
import sys

PAM_RHOST = 4
PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2


class Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class Response(ctypes.Structure):
    # resp is malloc'ed here and freed by libpam: a void *, not a Python string
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(Message)),
                        ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)


class Conv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata_ptr", ctypes.c_void_p)]


def main():
    if len(sys.argv) < 5:
        sys.stderr.write("usage: pam.py SERVICE USER RHOST PASSWORD...\n")
        return 2
    service, user, rhost = (a.encode() for a in sys.argv[1:4])
    # pam_wrapper interposes pam_start & co. by preloading: the symbols
    # must come from the process's global scope (a handle on libpam alone
    # would give libpam's own, and the system's /etc/pam.d)
    ctypes.CDLL(ctypes.util.find_library("pam"), mode=ctypes.RTLD_GLOBAL)
    pam = ctypes.CDLL(None)
    libc = pam
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.strdup.restype = ctypes.c_void_p
    libc.strdup.argtypes = [ctypes.c_char_p]
    pam.pam_strerror.restype = ctypes.c_char_p
    pam.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Conv),
                              ctypes.POINTER(ctypes.c_void_p)]
    pam.pam_set_item.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    pam.pam_authenticate.argtypes = [ctypes.c_void_p, ctypes.c_int]
    pam.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]
    names = {0: "PAM_SUCCESS", 7: "PAM_AUTH_ERR", 9: "PAM_AUTHINFO_UNAVAIL", 10: "PAM_USER_UNKNOWN",
             6: "PAM_PERM_DENIED", 25: "PAM_MAXTRIES", 8: "PAM_CRED_INSUFFICIENT"}
    for password in sys.argv[4:]:
        def conv(n, msgs, resp, data, pw=password.encode()):
            arr = ctypes.cast(libc.calloc(n, ctypes.sizeof(Response)), ctypes.POINTER(Response))
            if not arr:
                return 5  # PAM_BUF_ERR
            for i in range(n):
                if msgs[i].contents.msg_style in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON):
                    arr[i].resp = libc.strdup(pw)
            resp[0] = arr
            return 0
        c = Conv(CONV(conv), None)
        h = ctypes.c_void_p()
        rc = pam.pam_start(service, user, ctypes.byref(c), ctypes.byref(h))
        if rc != 0:
            print("pam_start-%d" % rc, flush=True)
            continue
        pam.pam_set_item(h, PAM_RHOST, rhost)
        rc = pam.pam_authenticate(h, 0)
        pam.pam_end(h, rc)
        print(names.get(rc, "PAM_%d" % rc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
