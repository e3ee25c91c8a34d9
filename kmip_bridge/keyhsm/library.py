"""The PKCS#11 module, initialised once per process for multi-threaded use.

python-pkcs11 calls C_Initialize(NULL), which tells SoftHSM2 the application is single-threaded: it
then skips its own locking, and concurrent sessions from several threads crash (SIGSEGV, double
free) or hang. So C_Initialize is called here through ctypes with CKF_OS_LOCKING_OK, and
python-pkcs11 gets a lib object whose own initialize() does nothing. Login, logout and session-state
queries also go through ctypes (see token.py for why).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pkcs11 import _pkcs11
from pkcs11 import exceptions as p11e

from .errors import TokenUnavailable

if TYPE_CHECKING:
    from .token import _Login

CKF_OS_LOCKING_OK = 0x2
CKU_USER = 1
CKR_OK = 0
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
_USER_STATES = (1, 3)  # CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS
PIN_FAILURES = {
    0xA0: "the user PIN is incorrect",
    0xA3: "the user PIN has expired",
    0xA4: "the user PIN is locked",
    0x102: "the user PIN is not initialised on the token",
}
_RV_TEXT = {
    **PIN_FAILURES,
    0x05: "general error",
    0x06: "function failed",
    0x30: "device error",
    0x31: "device out of memory",
    0x32: "device removed",
    0xB3: "session handle invalid",
    0xE0: "token not present",
    0x190: "library not initialised",
}


def rv_text(rv: int) -> str:
    return _RV_TEXT.get(rv, f"CKR 0x{rv:X}")


_FN = ctypes.c_void_p
_RV = ctypes.c_ulong


class _FunctionList(ctypes.Structure):
    # CK_FUNCTION_LIST up to C_Logout, in PKCS#11 v2.40 order; later entries are not needed.
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)] + [
        (name, _FN)
        for name in (
            "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList",
            "C_GetSlotInfo", "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo",
            "C_InitToken", "C_InitPIN", "C_SetPIN", "C_OpenSession", "C_CloseSession",
            "C_CloseAllSessions", "C_GetSessionInfo", "C_GetOperationState", "C_SetOperationState",
            "C_Login", "C_Logout",
        )
    ]


class _InitArgs(ctypes.Structure):  # CK_C_INITIALIZE_ARGS
    _fields_ = [
        ("CreateMutex", _FN), ("DestroyMutex", _FN), ("LockMutex", _FN), ("UnlockMutex", _FN),
        ("flags", ctypes.c_ulong), ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):  # CK_SESSION_INFO
    _fields_ = [
        ("slotID", ctypes.c_ulong), ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong), ("ulDeviceError", ctypes.c_ulong),
    ]


class _Raw:
    """The entry points python-pkcs11 does not let us call the way we need (ctypes releases the GIL)."""

    def __init__(self, path: str) -> None:
        self.dll = ctypes.CDLL(path)  # same dlopen handle as python-pkcs11's, so the same library state
        get = self.dll.C_GetFunctionList
        get.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionList))]
        get.restype = _RV
        funcs = ctypes.POINTER(_FunctionList)()
        rv = get(ctypes.byref(funcs))
        if rv != CKR_OK:
            raise TokenUnavailable(f"C_GetFunctionList of {path} failed: {rv_text(rv)}")
        f = funcs.contents
        self.initialize = ctypes.CFUNCTYPE(_RV, ctypes.c_void_p)(f.C_Initialize)
        self.finalize = ctypes.CFUNCTYPE(_RV, ctypes.c_void_p)(f.C_Finalize)
        self.get_session_info = ctypes.CFUNCTYPE(_RV, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))(
            f.C_GetSessionInfo
        )
        self.login = ctypes.CFUNCTYPE(_RV, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong)(
            f.C_Login
        )
        self.logout = ctypes.CFUNCTYPE(_RV, ctypes.c_ulong)(f.C_Logout)

    def session_state(self, handle: int) -> int | None:
        info = _SessionInfo()
        rv = self.get_session_info(handle, ctypes.byref(info))
        return int(info.state) if rv == CKR_OK else None

    def logged_in(self, handle: int) -> bool:
        return self.session_state(handle) in _USER_STATES

    def login_user(self, handle: int, pin: str) -> int:
        """C_Login as the user; CKR_OK or CKR_USER_ALREADY_LOGGED_IN mean success."""
        secret = pin.encode()
        return int(self.login(handle, CKU_USER, secret, len(secret)))


class _PreInitialisedLib(_pkcs11.lib):
    def initialize(self) -> None:
        """No-op: Library already ran C_Initialize with CKF_OS_LOCKING_OK (see module docstring)."""


class Library:
    """A PKCS#11 module initialised for multi-threaded use in this process."""

    def __init__(self, path: str, conf: str | None, inherited: bool, lock_file: str | None) -> None:
        if not os.path.exists(path):
            raise TokenUnavailable(f"PKCS#11 module {path} does not exist")
        self.path = path
        try:
            self.raw = _Raw(path)
        except OSError as exc:
            raise TokenUnavailable(f"cannot load PKCS#11 module {path}: {exc}") from None
        self.conf: str | None = None
        self.lock_file = lock_file
        self.logins: dict[str, _Login] = {}  # login_key(label, serial) -> this process's login to it
        # Bumped by restart(): sessions and key handles of an older generation are gone.
        self.generation = 0
        self.initialised = False
        self.gate = Gate()
        self.last_recovery = 0.0  # time.monotonic() of the last attempt to re-find a lost token
        if inherited:
            # State copied over fork() is not usable in the child; start again.
            self.raw.finalize(None)
        self._initialize(conf)
        try:
            self.lib = _PreInitialisedLib(path)
        except p11e.PKCS11Error as exc:
            raise TokenUnavailable(f"cannot load PKCS#11 module {path}: {exc}") from None

    def _initialize(self, conf: str | None) -> None:
        if conf is not None:
            os.environ["SOFTHSM2_CONF"] = conf  # SoftHSM2 reads it in C_Initialize
        # SoftHSM2 scans the token directory here; a token file that another process is rewriting
        # at that moment (e.g. during its login) is skipped, and the token stays invisible.
        with file_lock(self.lock_file):
            rv = self.raw.initialize(ctypes.byref(_InitArgs(flags=CKF_OS_LOCKING_OK)))
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise TokenUnavailable(f"C_Initialize of {self.path} failed: {rv_text(rv)}")
        self.initialised = True
        self.conf = os.environ.get("SOFTHSM2_CONF")

    def use_conf(self, conf: str | None) -> None:
        """Re-initialises for another SOFTHSM2_CONF, possible only while nothing is logged in."""
        if conf is None or conf == self.conf:
            return
        if self.logins:
            raise TokenUnavailable(
                f"PKCS#11 module {self.path} is in use in this process with SOFTHSM2_CONF={self.conf}; "
                f"cannot switch to {conf}"
            )
        self.restart(conf)

    def restart(self, conf: str | None) -> None:
        """C_Finalize + C_Initialize: the only way to make SoftHSM2 scan its tokens again. A
        failed C_Initialize (SoftHSM2 fails it while its token folder is missing) leaves the module
        finalised, and the next restart only initialises."""
        if self.initialised:
            self.raw.finalize(None)
            self.initialised = False
            self.generation += 1
        self._initialize(conf)


class Gate:
    """Shared for every PKCS#11 call, exclusive for C_Finalize/C_Initialize (finalising while
    another thread is inside the module is undefined behaviour). Reader-preferring and re-entrant
    for readers, so a thread already inside may nest; exclusive() refuses (returns False) when the
    calling thread is itself inside, instead of deadlocking."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._mine = threading.local()

    def held(self) -> bool:
        return getattr(self._mine, "depth", 0) > 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        if not self.held():
            with self._cond:
                while self._writer:
                    self._cond.wait()
                self._readers += 1
        self._mine.depth = getattr(self._mine, "depth", 0) + 1
        try:
            yield
        finally:
            self._mine.depth -= 1
            if self._mine.depth == 0:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        if self.held():
            yield False
            return
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield True
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@contextmanager
def file_lock(path: str | None, shared: bool = False) -> Iterator[None]:
    """Cross-process exclusion (fcntl.flock); a no-op without a lock file."""
    if path is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TokenUnavailable(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_registry_lock = threading.Lock()
_libraries: dict[tuple[str, int], Library] = {}


def _reset_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # may have been held by another thread at fork time


os.register_at_fork(after_in_child=_reset_after_fork)


def registry_lock() -> threading.Lock:
    """Guards the libraries and their logins (a function: the lock is replaced after fork)."""
    return _registry_lock


def library_for(module: str, conf: str | None, lock_file: str | None) -> Library:
    """This process's library for the module path (caller holds registry_lock()). Keyed by pid:
    a forked child must initialise the library itself."""
    path = os.path.realpath(module)
    key = (path, os.getpid())
    library = _libraries.get(key)
    if library is None:
        inherited = any(p == path for p, _ in _libraries)
        library = Library(path, os.path.abspath(conf) if conf else None, inherited, lock_file)
        _libraries[key] = library
    else:
        library.use_conf(os.path.abspath(conf) if conf else None)
    return library
