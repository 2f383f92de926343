#!/usr/bin/env python3
"""pamlogin.py SERVICE - logins through the system's real libpam, the way a
mail server makes them: pam_start, PAM_RHOST, pam_authenticate, then
pam_acct_mgmt, pam_end.

Reads one attempt a line from stdin, "USER PASSWORD RHOST", and prints the
stack's PAM code for each (0 = PAM_SUCCESS, 7 = PAM_AUTH_ERR). For the
install test (tests/install/run.sh): python3 is all it needs besides libpam,
so it drives the installed module without a build tree.
"""
import ctypes
import ctypes.util
import sys

PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_RHOST = 4
PAM_BUF_ERR = 5
PAM_CONV_ERR = 19


class PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


CONV_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                             ctypes.POINTER(ctypes.POINTER(PamMessage)),
                             ctypes.POINTER(ctypes.POINTER(PamResponse)),
                             ctypes.c_void_p)


class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


libpam = ctypes.CDLL(ctypes.util.find_library("pam") or "libpam.so.0")
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
# libpam frees the responses with free(): they must come from malloc
libc.calloc.restype = ctypes.c_void_p
libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.strdup.restype = ctypes.c_void_p
libc.strdup.argtypes = [ctypes.c_char_p]
libpam.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                             ctypes.POINTER(PamConv), ctypes.POINTER(ctypes.c_void_p)]
libpam.pam_set_item.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
libpam.pam_authenticate.argtypes = [ctypes.c_void_p, ctypes.c_int]
libpam.pam_acct_mgmt.argtypes = [ctypes.c_void_p, ctypes.c_int]
libpam.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]

password = b""


def conv(n, msgs, resp, _data):
    """Answers every prompt with the current attempt's password."""
    block = libc.calloc(n, ctypes.sizeof(PamResponse))
    if not block:
        return PAM_BUF_ERR
    answers = ctypes.cast(block, ctypes.POINTER(PamResponse))
    for i in range(n):
        if msgs[i].contents.msg_style in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON):
            answers[i].resp = libc.strdup(password)
    resp[0] = answers
    return 0


CONV = PamConv(CONV_FUNC(conv), None)


def login(service, user, rhost):
    handle = ctypes.c_void_p()
    rc = libpam.pam_start(service, user, ctypes.byref(CONV), ctypes.byref(handle))
    if rc != 0:
        return rc
    rc = libpam.pam_set_item(handle, PAM_RHOST, ctypes.c_char_p(rhost))
    if rc == 0:
        rc = libpam.pam_authenticate(handle, 0)
    if rc == 0:
        rc = libpam.pam_acct_mgmt(handle, 0)
    libpam.pam_end(handle, rc)
    return rc


def main():
    global password
    if len(sys.argv) != 2:
        print("usage: pamlogin.py SERVICE < 'USER PASSWORD RHOST' lines", file=sys.stderr)
        return 2
    service = sys.argv[1].encode()
    for line in sys.stdin:
        fields = line.split()
        if len(fields) != 3:
            continue
        user, password, rhost = (f.encode() for f in fields)
        print(login(service, user, rhost), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
