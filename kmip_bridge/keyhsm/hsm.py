"""KeyHsm: seal/open managed-object material under KEKs on the token, and manage those KEKs.

Other processes (the CLI) may rotate or revoke KEKs while a server runs, so nothing cached here is
trusted blindly: the current version is re-read after kek_refresh_seconds, and a stale key handle
leads to a fresh search whose failure, with a working login, means the KEK was destroyed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from . import envelope, kek, mechanisms, per_object
from .envelope import Sealed
from .errors import (
    IntegrityError,
    KekExists,
    KekNotFound,
    KekRevoked,
    KeyHsmError,
    SessionBroken,
    TokenUnavailable,
)
from .kek import AES, KEK_CLASS, RSA, KekInfo
from .mechanisms import WrapMechanism
from .per_object import OBJECT_AES, ObjectKeyDestroyed, ObjectKeyLabel
from .token import PooledSession, TokenConnection, TokenSettings

T = TypeVar("T")
log = logging.getLogger("kmip_bridge.keyhsm")

# A handle that no longer names an object: another process destroyed (or re-created) the key.
_STALE = (
    p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
    p11e.UnwrappingKeyHandleInvalid,
    p11e.WrappingKeyHandleInvalid,
)
# What the token may report for a tampered or misplaced wrapped DEK. SoftHSM2 says GeneralError for
# a GCM tag mismatch, bad OAEP padding and a failed key-wrap check; openCryptoki FunctionFailed for bad
# OAEP padding (measured), so these cannot be told apart from a device fault here; they are only mapped
# to IntegrityError for the unwrap call itself.
_UNWRAP_FAILED = (
    p11e.EncryptedDataInvalid,
    p11e.EncryptedDataLenRange,
    p11e.DataInvalid,
    p11e.DataLenRange,
    p11e.GeneralError,
    p11e.FunctionFailed,
    p11e.WrappedKeyInvalid,
    p11e.WrappedKeyLenRange,
)


class KeyHsm:
    def __init__(
        self,
        settings: TokenSettings,
        kek_name: str,
        kek_refresh_seconds: float = 5.0,
        wrap_mechanisms: tuple[str, ...] = (),
        per_object_keks: frozenset[str] = frozenset(),
    ) -> None:
        kek.check_name(kek_name)
        self._kek_name = kek_name
        # KEK names whose new objects get a token key of their own instead (keyhsm.per_object)
        self._per_object = per_object_keks
        self._ttl = kek_refresh_seconds
        self._preferred = mechanisms.check_names(wrap_mechanisms)
        # KEK label -> the mechanism new wraps under it use (chosen once per label, see _mechanism)
        self._chosen: dict[str, WrapMechanism] = {}
        self._offered: dict[int, mechanisms.Offered] | None = None
        self._current: dict[str, tuple[KekInfo, float]] = {}
        # label -> (public key, modulus bytes) of rsa-oaep KEKs: wrapping happens in software.
        self._public: dict[str, tuple[rsa.RSAPublicKey, bytes]] = {}
        self._token = TokenConnection(settings)

    def __enter__(self) -> KeyHsm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- envelope -------------------------------------------------------------------------------

    def seal(self, object_id: str, material: bytes, context: str = "", kek_name: str | None = None) -> Sealed:
        name = kek_name or self._kek_name
        if name in self._per_object:
            return self._seal_per_object(object_id, material, context)
        try:
            return self._seal_under(self.current_kek(name), object_id, material, context)
        except KekRevoked:
            # The cached current version was destroyed meanwhile: look again, once.
            self._current.pop(name, None)
        return self._seal_under(self.current_kek(name), object_id, material, context)

    def _seal_under(self, info: KekInfo, object_id: str, material: bytes, context: str) -> Sealed:
        dek = envelope.new_dek()
        nonce, ciphertext = envelope.encrypt(dek, material, envelope.material_aad(object_id, context))
        mech, wrapped, wrap_nonce = self._wrap(info, dek, object_id, context)
        return Sealed(info.label, mech.name, nonce, ciphertext, wrapped, wrap_nonce, envelope.CURRENT_FORMAT)

    def _seal_per_object(self, object_id: str, material: bytes, context: str) -> Sealed:
        """A new token key for this object alone wraps its DEK. Key and wrap happen under the admin
        session (token writes are exclusive, token.reading()); a wrap that fails takes the new key
        with it, so a failure leaves nothing behind but, after a crash, a row-less key (db check)."""
        label = per_object.make_label(object_id)
        dek = envelope.new_dek()
        nonce, ciphertext = envelope.encrypt(dek, material, envelope.material_aad(object_id, context))
        associated = envelope.wrap_aad(object_id, label, OBJECT_AES, context)
        with _admin_errors("creating a per-object key"), self._token.admin() as session:
            key = per_object.generate(session, label)
            try:
                wrapped, wrap_nonce = mechanisms.aes_wrap(mechanisms.AES_GCM, key, dek, associated)
            except BaseException:
                with suppress(p11e.PKCS11Error):
                    key.destroy()
                raise
        return Sealed(label, OBJECT_AES, nonce, ciphertext, wrapped, wrap_nonce, envelope.CURRENT_FORMAT)

    def destroy_object_key(self, label: str) -> bool:
        """Destroys a per-object key (after its row's Destroy is durable); False if it was gone."""
        if per_object.parse_label(label) is None:
            raise KeyHsmError(f"'{label}' is not the label of a per-object key")
        with _admin_errors("destroying a per-object key"), self._token.admin() as session:
            return per_object.destroy(session, label)

    def list_object_keys(self) -> list[ObjectKeyLabel]:
        return self._listing("listing per-object keys", per_object.list_labels)

    def _wrap(self, info: KekInfo, dek: bytes, object_id: str, context: str) -> tuple[WrapMechanism, bytes, bytes]:
        """(mechanism, wrapped DEK, wrap nonce) under KEK ``info``, bound to the object, the KEK
        and the mechanism (format 2)."""
        mech = self._mechanism(info)
        associated = envelope.wrap_aad(object_id, info.label, mech.name, context)
        if mech.kek_type == RSA:
            return mech, mechanisms.rsa_wrap(mech, self._rsa_public(info.label), dek, associated), b""
        wrapped, nonce = self._on_token(
            info.label, AES, "wrapping a data key", lambda key: mechanisms.aes_wrap(mech, key, dek, associated)
        )
        return mech, wrapped, nonce

    def _unwrap(self, object_id: str, sealed: Sealed, context: str) -> bytes:
        """The plaintext DEK of a validated record; it never leaves this class."""
        associated = envelope.wrap_aad_of(sealed, object_id, context)
        if sealed.kek_kind == OBJECT_AES:
            if per_object.parse_label(sealed.kek_label).uid != object_id:  # type: ignore[union-attr]
                raise IntegrityError("the sealed record names the per-object key of another object (moved)")
            return self._on_token(
                sealed.kek_label, OBJECT_AES, "unwrapping a data key",
                lambda key: mechanisms.token_unwrap(
                    mechanisms.AES_GCM, key, sealed.wrapped_dek, sealed.wrap_nonce, associated),
                unwrap=True,
            )
        mech = mechanisms.get(sealed.kek_kind)
        assert mech is not None  # validate() checked it
        plain = self._on_token(
            sealed.kek_label, mech.kek_type, "unwrapping a data key",
            lambda key: mechanisms.token_unwrap(mech, key, sealed.wrapped_dek, sealed.wrap_nonce, associated),
            unwrap=True,
        )
        # Format 1 rsa-oaep rows wrapped the bare DEK.
        if mech.bound_inside and sealed.format != envelope.FORMAT_1:
            return mechanisms.split_bound(plain, associated)
        return plain

    # -- mechanism choice -------------------------------------------------------------------------

    def token_mechanisms(self) -> dict[int, mechanisms.Offered]:
        """The token's mechanism list (read once per KeyHsm)."""
        if self._offered is None:
            try:
                self._offered = self._token.mechanisms()
            except p11e.PKCS11Error as exc:
                raise _unavailable(None, "reading the mechanism list", exc) from None
        return self._offered

    def _mechanism(self, info: KekInfo) -> WrapMechanism:
        """The mechanism new wraps under KEK ``info`` use: chosen once per KEK version from the
        token's list, the KEK's attributes and a round trip (mechanisms.choose)."""
        chosen = self._chosen.get(info.label)
        if chosen is None:
            found, verdicts = self.choose_mechanism(info)
            if found is None:
                raise KeyHsmError(mechanisms.none_usable(info.kind, info.label, verdicts))
            chosen = self._chosen[info.label] = found
            log.info("KEK '%s' wraps data keys with %s (%s)", info.label, found.name, found.what)
        return chosen

    def choose_mechanism(self, info: KekInfo) -> tuple[WrapMechanism | None, list[tuple[str, str]]]:
        """(the mechanism for KEK ``info`` or None, the verdict on each candidate)."""
        offered = self.token_mechanisms()
        public = self._rsa_public(info.label) if info.kind == RSA else None
        return self._on_token(
            info.label, info.kind, "trying wrap mechanisms",
            lambda key: mechanisms.choose(mechanisms.preference(info.kind, self._preferred), offered, key, public),
        )

    def check_mechanism(self, kek_name: str | None = None) -> WrapMechanism:
        """The mechanism the current version of KEK ``kek_name`` wraps with; KeyHsmError naming
        what the token lacks if there is none (start-up refuses then)."""
        return self._mechanism(self.current_kek(kek_name))

    def open(self, object_id: str, sealed: Sealed, context: str = "") -> bytes:
        envelope.validate(sealed)
        dek = self._unwrap(object_id, sealed, context)
        return envelope.decrypt(dek, sealed, envelope.material_aad_of(sealed, object_id, context))

    def rewrap(self, object_id: str, sealed: Sealed, context: str = "") -> Sealed:
        """The record moved to the current version of the KEK name it is under (``sealed`` itself
        if it is there already). Format 2: only the DEK is unwrapped (old version) and wrapped
        again (current version); nonce and ciphertext are returned byte for byte. Format 1 binds
        the material to the KEK, so such a record is re-sealed once, into format 2. Neither the DEK
        nor the material ever reaches the caller."""
        envelope.validate(sealed)
        if per_object.is_per_object(sealed.kek_kind):
            return sealed  # its own key: no KEK version to move to
        parsed = kek.parse_label(sealed.kek_label)
        assert parsed is not None  # validate() checked it
        name = parsed[0]
        if self.current_kek(name).label == sealed.kek_label:
            return sealed
        if sealed.format == envelope.FORMAT_1:
            return self.seal(object_id, self.open(object_id, sealed, context), context, kek_name=name)
        dek = self._unwrap(object_id, sealed, context)
        # The material is checked against this DEK before the DEK is carried forward: a record
        # whose parts do not belong together is reported now, while the old KEK still exists.
        envelope.decrypt(dek, sealed, envelope.material_aad_of(sealed, object_id, context))
        for attempt in range(2):
            info = self.current_kek(name)
            try:
                mech, wrapped, wrap_nonce = self._wrap(info, dek, object_id, context)
                break
            except KekRevoked:
                if attempt:
                    raise
                # The cached current version was destroyed meanwhile: look again, once (as seal does).
                self._current.pop(name, None)
        return dataclasses.replace(
            sealed, kek_label=info.label, kek_kind=mech.name, wrapped_dek=wrapped, wrap_nonce=wrap_nonce
        )

    def _rsa_public(self, label: str) -> rsa.RSAPublicKey:
        """The cached public key, after confirming the private half still exists and matches: the
        software wrap never touches the token, and sealing under a revoked KEK would lose the object."""
        modulus = self._on_token(label, RSA, "checking the KEK", lambda key: key[Attribute.MODULUS])
        cached = self._public.get(label)
        if cached is None or cached[1] != modulus:
            with self._token.session() as ps, self._token.reading():
                try:
                    public = kek.find_one(ps.session, label, ObjectClass.PUBLIC_KEY)
                    n, e = public[Attribute.MODULUS], public[Attribute.PUBLIC_EXPONENT]
                except p11e.NoSuchKey:
                    raise KeyHsmError(f"the public half of KEK '{label}' is missing on the token") from None
                except p11e.PKCS11Error as exc:
                    raise _unavailable(label, "reading the public key", exc) from None
            if n != modulus:
                raise KeyHsmError(f"the public and private halves of KEK '{label}' do not match")
            key = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
            cached = (key, n)
            self._public[label] = cached
        return cached[0]

    def _on_token(
        self, label: str, kind: str, what: str, op: Callable[[Any], T], unwrap: bool = False
    ) -> T:
        """op(key) with the KEK's key object on a pooled session; PKCS#11 errors become ours."""
        try:
            try:
                return self._with_key(label, kind, op, unwrap)
            except SessionBroken:
                return self._with_key(label, kind, op, unwrap)  # once more, on another session
        except p11e.PKCS11Error as exc:
            raise _unavailable(label, what, exc) from None

    def _with_key(self, label: str, kind: str, op: Callable[[Any], T], unwrap: bool) -> T:
        if kind == OBJECT_AES:
            return self._with_object_key(label, op)
        slot = (label, KEK_CLASS[kind])
        with self._token.session() as ps:
            for _ in range(2):
                key = ps.keys.get(slot)
                if key is None:
                    key = ps.keys[slot] = self._find(ps, label, kind)
                try:
                    return op(key)
                except _UNWRAP_FAILED:
                    if not unwrap:
                        raise
                    raise IntegrityError(
                        "the wrapped data key failed its integrity check (tampered with, or moved "
                        "from another object)"
                    ) from None
                except _STALE:
                    ps.keys.pop(slot, None)  # re-find once
                except p11e.UserNotLoggedIn:
                    ps.keys.pop(slot, None)
                    self._token.ensure_login()
        raise TokenUnavailable(f"the token keeps invalidating the handle of KEK '{label}'")

    def _with_object_key(self, label: str, op: Callable[[Any], T]) -> T:
        """op(key) with a per-object key: from the session's handle cache, else found by CKA_ID."""
        with self._token.session() as ps:
            for _ in range(2):
                key = ps.object_keys.get(label)
                if key is None:
                    key = self._find_object_key(ps, label)
                    if key is None:
                        break
                    ps.object_keys.put(label, key)
                try:
                    return _object_op(op, key)
                except (*_STALE, p11e.UserNotLoggedIn):
                    ps.object_keys.drop([label])  # destroyed by another process: look again
                    self._token.ensure_login()
        # Not seen from a pooled session. Before calling the object destroyed, look once more
        # under the exclusive token lock (no writer anywhere): a false "irretrievable" must not
        # happen. (The cause once seen, SoftHSM2 hiding another process's new objects from a
        # process that wrote since, is prevented in per_object.generate; this is the backstop.)
        with _admin_errors("looking for a per-object key"), self._token.admin() as session:
            try:
                key = per_object.find(session, label)
            except p11e.NoSuchKey:
                key = None
            if key is not None:
                log.warning("per-object key found only under the exclusive token lock", extra={"kek": label})
                return _object_op(op, key)
        self._token.confirm_present()  # an absent token looks empty, not destroyed
        raise ObjectKeyDestroyed(label)

    def _find_object_key(self, ps: PooledSession, label: str) -> Any | None:
        for attempt in range(2):
            try:
                with self._token.reading():
                    return per_object.find(ps.session, label)
            except p11e.NoSuchKey:
                if not attempt:
                    self._token.ensure_login()  # not found means destroyed only with a login
        return None

    def _find(self, ps: PooledSession, label: str, kind: str) -> Any:
        try:
            with self._token.reading():
                return kek.find_one(ps.session, label, KEK_CLASS[kind])
        except p11e.NoSuchKey:
            pass
        # A process that lost its login cannot see private objects either: "not found" means
        # "destroyed" only once the login is confirmed (and restored if need be). Not under the
        # shared lock: logging in again takes the exclusive one.
        self._token.ensure_login()
        other = RSA if kind == AES else AES
        with self._token.reading():
            try:
                return kek.find_one(ps.session, label, KEK_CLASS[kind])
            except p11e.NoSuchKey:
                pass
            try:
                kek.find_one(ps.session, label, KEK_CLASS[other])
            except p11e.NoSuchKey:
                self._token.confirm_present()  # an absent token looks empty, not revoked
                raise KekRevoked(label) from None
        raise IntegrityError(f"sealed record says KEK '{label}' is {kind}, but on the token it is {other}")

    # -- KEK management ---------------------------------------------------------------------------

    def current_kek(self, kek_name: str | None = None) -> KekInfo:
        """The highest existing version, cached for kek_refresh_seconds (0: always looked up)."""
        name = kek_name or self._kek_name
        cached = self._current.get(name)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            return cached[0]
        versions = [k for k in self.list_keks() if k.name == name]
        if not versions:
            self._token.confirm_present()  # an absent token looks empty
            raise KekNotFound(name)
        latest = max(versions, key=lambda k: k.version)
        if self._ttl > 0:
            self._current[name] = (latest, now + self._ttl)
        return latest

    def list_keks(self) -> list[KekInfo]:
        return self._listing("listing KEKs", kek.list_keks)

    def _listing(self, what: str, read: Callable[[Any], list[T]]) -> list[T]:
        """``read(session)`` of the token's objects, logged in (private objects are invisible
        without it) and under the read side of the token lock."""
        self._token.ensure_login()
        try:
            with self._token.session() as ps, self._token.reading():
                return read(ps.session)
        except p11e.PKCS11Error as exc:
            raise _unavailable(None, what, exc) from None

    def create_kek(self, name: str, kind: str) -> KekInfo:
        kek.check_name(name)
        kind = kek.check_kind(kind)
        self._require_kind(kind)
        with _admin_errors("creating a KEK"), self._token.admin() as session:
            if any(k.name == name for k in kek.list_keks(session)):
                raise KekExists(name)
            info = kek.generate(session, name, 1, kind)
        self._current.pop(name, None)
        return info

    def _require_kind(self, kind: str) -> None:
        """Refuses a KEK kind for which the token lists no candidate mechanism at all (the
        round trip happens at first use; a KEK nothing could wrap with is not made)."""
        offered = self.token_mechanisms()
        candidates = mechanisms.preference(kind, self._preferred)
        if all(mechanisms.listed(m, offered) for m in candidates):
            why = "; ".join(f"{m.name}: {mechanisms.listed(m, offered)}" for m in candidates)
            raise KeyHsmError(f"the token offers no wrap mechanism for {kind} KEKs ({why})")

    def rotate_kek(self, name: str) -> KekInfo:
        kek.check_name(name)
        with _admin_errors("rotating a KEK"), self._token.admin() as session:
            versions = [k for k in kek.list_keks(session) if k.name == name]
            if not versions:
                raise KekNotFound(name)
            latest = max(versions, key=lambda k: k.version)
            self._require_kind(latest.kind)
            info = kek.generate(session, name, latest.version + 1, latest.kind)
        self._current.pop(name, None)
        return info

    def revoke_kek(self, label: str) -> list[str]:
        """Destroys KEK `label` ("default-v1"), or every version of a bare name ("default")."""
        parsed = kek.parse_label(label)
        if parsed is None:
            kek.check_name(label)
        with _admin_errors("revoking a KEK"), self._token.admin() as session:
            if parsed is not None:
                targets = [label]
            else:
                targets = [k.label for k in kek.list_keks(session) if k.name == label]
            destroyed = [t for t in targets if kek.destroy(session, t) > 0]
        if not destroyed:
            raise KekNotFound(label, f"no KEK '{label}' on the token")
        for t in destroyed:
            self._public.pop(t, None)
            # Key handles cached per pooled session go stale and are re-found on their own.
            self._current.pop(t.rsplit("-v", 1)[0], None)
        return destroyed

    def check(self) -> None:
        self._token.check()

    def close(self) -> None:
        self._token.close()


def _object_op(op: Callable[[Any], T], key: Any) -> T:
    try:
        return op(key)
    except _UNWRAP_FAILED:
        raise IntegrityError(
            "the wrapped data key failed its integrity check (tampered with, or moved from another object)"
        ) from None


def _unavailable(label: str | None, what: str, exc: Exception) -> TokenUnavailable:
    where = f" with KEK '{label}'" if label else ""
    return TokenUnavailable(f"{what}{where} failed on the token: {type(exc).__name__}")


@contextmanager
def _admin_errors(what: str) -> Iterator[None]:
    try:
        yield
    except p11e.PKCS11Error as exc:
        raise _unavailable(None, what, exc) from None
