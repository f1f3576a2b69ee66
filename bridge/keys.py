"""Account keys, the bubble root key and gateway credentials.

An account is one random 32-byte seed. Every key it uses is derived from the seed
with keyed BLAKE2b and a distinct personalisation, so each purpose has its own key:

    encryption  X25519     envelopes are sealed to its public half
    signing     Ed25519    the sender's signature inside every envelope
    mailbox     Ed25519    signs relay requests that read the mailbox; the relay's
                           opaque mailbox id is a hash of its public half
    storage     32 bytes   symmetric key for the gateway's local mailbox store
    message_id  32 bytes   keyed hash for rewriting Message-ID host parts

Rotation adds a key generation: a fresh random seed from which the encryption and
signing keys of that generation are derived (with the same labels). The mailbox,
storage and Message-ID keys always come from the first seed, so the relay mailbox
and the stored mail stay reachable; earlier generations are kept so that envelopes
sealed to their encryption keys still open. `AccountKeys.pack()` is the first seed
followed by each generation's seed, 32 bytes each, oldest first.

At rest the packed seeds are sealed under a key derived from the passphrase with
Argon2id (`seal_seed` / `unseal_seed`). This module never writes files.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils
from nacl.public import PrivateKey

from bridge.errors import CannotOpen, WrongPassphrase

SEED_LEN = 32
MAX_KEY_GENERATIONS = 64  # rotations an account can go through, counting its first keys
MAILBOX_ID_LEN = 32
SEALED_SEED_MAGIC = b"SGK1"
_SEALED_SEED_HEADER = struct.Struct(">4sQQ16s")  # magic, opslimit, memlimit, salt
SEALED_SEED_BODY_LEN = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES + SEED_LEN
_MAX_SEALED_SEEDS_LEN = SEALED_SEED_BODY_LEN + (MAX_KEY_GENERATIONS - 1) * SEED_LEN
MAX_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE


def derive(seed: bytes, purpose: bytes, length: int = 32) -> bytes:
    """Derive a purpose-specific key from a seed (keyed BLAKE2b, 16-byte personalisation)."""
    if len(purpose) > 16:
        raise ValueError("purpose label is at most 16 bytes")
    return nacl.hash.blake2b(
        b"",
        digest_size=length,
        key=seed,
        person=purpose.ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )


def mailbox_id_for(mailbox_verify_key: bytes) -> bytes:
    """The opaque mailbox id the relay knows: a hash of the mailbox key, nothing else."""
    return nacl.hash.blake2b(
        mailbox_verify_key,
        digest_size=MAILBOX_ID_LEN,
        person=b"sg-mailbox-id".ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )


@dataclass(frozen=True)
class AccountPublic:
    """The public halves of an account's keys, as the directory publishes them."""

    encryption_key: bytes  # X25519, 32 bytes
    signing_key: bytes  # Ed25519 verify key, 32 bytes
    mailbox_key: bytes  # Ed25519 verify key, 32 bytes

    def __post_init__(self) -> None:
        for name in ("encryption_key", "signing_key", "mailbox_key"):
            if len(getattr(self, name)) != 32:
                raise ValueError(f"{name} must be 32 bytes")

    @cached_property
    def mailbox_id(self) -> bytes:  # a hash for every envelope sealed to it: kept
        return mailbox_id_for(self.mailbox_key)


class AccountKeys:
    """An unlocked account: its first seed, later key generations, every derived key.

    Memory only. `encryption` and `signing` belong to the newest generation;
    `mailbox`, `storage_key` and `message_id_key` to the first seed, whatever the
    generation.
    """

    def __init__(self, seed: bytes, generations: Sequence[bytes] = ()) -> None:
        generations = tuple(generations)
        if len(seed) != SEED_LEN or any(len(g) != SEED_LEN for g in generations):
            raise ValueError("account seed must be 32 bytes")
        if 1 + len(generations) > MAX_KEY_GENERATIONS:
            raise ValueError(f"an account has at most {MAX_KEY_GENERATIONS} key generations")
        self._seed = seed
        self._generations = generations

    @classmethod
    def generate(cls) -> AccountKeys:
        return cls(nacl.utils.random(SEED_LEN))

    @classmethod
    def unpack(cls, packed: bytes) -> AccountKeys:
        """The inverse of `pack`; ValueError unless it is 1..MAX_KEY_GENERATIONS seeds."""
        if not packed or len(packed) % SEED_LEN:
            raise ValueError("packed account seeds are a multiple of 32 bytes")
        seeds = [packed[i : i + SEED_LEN] for i in range(0, len(packed), SEED_LEN)]
        return cls(seeds[0], seeds[1:])

    def pack(self) -> bytes:
        return self._seed + b"".join(self._generations)

    def rotated(self) -> AccountKeys:
        """The same account with one more generation: new encryption and signing keys."""
        return AccountKeys(self._seed, (*self._generations, nacl.utils.random(SEED_LEN)))

    @property
    def seed(self) -> bytes:
        return self._seed

    @property
    def generation(self) -> int:
        """0 for the first keys, n after n rotations."""
        return len(self._generations)

    def history(self) -> tuple[AccountKeys, ...]:
        """These keys, then each earlier generation's, newest first (for opening old mail)."""
        return tuple(
            AccountKeys(self._seed, self._generations[:n]) for n in range(self.generation, -1, -1)
        )

    @property
    def _current(self) -> bytes:
        return self._generations[-1] if self._generations else self._seed

    @cached_property
    def encryption(self) -> PrivateKey:
        return PrivateKey(derive(self._current, b"sg-encryption"))

    @cached_property
    def signing(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(derive(self._current, b"sg-signing"))

    @cached_property
    def mailbox(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(derive(self._seed, b"sg-mailbox"))

    @cached_property
    def storage_key(self) -> bytes:
        return derive(self._seed, b"sg-storage")

    @cached_property
    def message_id_key(self) -> bytes:
        return derive(self._seed, b"sg-message-id")

    @cached_property
    def public(self) -> AccountPublic:
        return AccountPublic(
            encryption_key=bytes(self.encryption.public_key),
            signing_key=bytes(self.signing.verify_key),
            mailbox_key=bytes(self.mailbox.verify_key),
        )

    def previous_signing_keys(self) -> tuple[bytes, ...]:
        """The signing verify keys of the earlier generations, oldest first."""
        return tuple(keys.public.signing_key for keys in reversed(self.history()[1:]))


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost. `moderate` (~0.5 s, 256 MiB) is the default for account keys;
    demos and tests may pass `interactive` (~0.08 s, 64 MiB) or `minimum`."""

    opslimit: int
    memlimit: int

    @classmethod
    def moderate(cls) -> KdfCost:
        return cls(nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE)

    @classmethod
    def interactive(cls) -> KdfCost:
        return cls(
            nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
        )

    @classmethod
    def minimum(cls) -> KdfCost:
        return cls(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)


def seal_seed(seed: bytes, passphrase: bytes, cost: KdfCost | None = None) -> bytes:
    """Seal a seed (or `AccountKeys.pack()`) under Argon2id(passphrase).

    The blob is magic, cost, salt, then a SecretBox of the seed bytes.
    """
    if not seed or len(seed) % SEED_LEN or len(seed) > MAX_KEY_GENERATIONS * SEED_LEN:
        raise ValueError("a sealed seed is 1 to MAX_KEY_GENERATIONS seeds of 32 bytes")
    cost = cost or KdfCost.moderate()
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    key = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase,
        salt,
        opslimit=cost.opslimit,
        memlimit=cost.memlimit,
    )
    header = _SEALED_SEED_HEADER.pack(SEALED_SEED_MAGIC, cost.opslimit, cost.memlimit, salt)
    return header + bytes(nacl.secret.SecretBox(key).encrypt(seed))


def unseal_seed(blob: bytes, passphrase: bytes) -> bytes:
    """Open a sealed seed (packed seeds: `AccountKeys.unpack`); `WrongPassphrase` if wrong."""
    if len(blob) < _SEALED_SEED_HEADER.size:
        raise CannotOpen("sealed keys")
    magic, opslimit, memlimit, salt = _SEALED_SEED_HEADER.unpack_from(blob)
    body_len = len(blob) - _SEALED_SEED_HEADER.size
    if magic != SEALED_SEED_MAGIC or not SEALED_SEED_BODY_LEN <= body_len <= _MAX_SEALED_SEEDS_LEN:
        raise CannotOpen("sealed keys")
    # The cost is read from the blob: bound it so a crafted blob cannot exhaust memory.
    if not (
        nacl.pwhash.argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT
        and nacl.pwhash.argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT
    ):
        raise CannotOpen("sealed keys")
    key = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase,
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )
    try:
        seed = nacl.secret.SecretBox(key).decrypt(blob[_SEALED_SEED_HEADER.size :])
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase() from None
    if not seed or len(seed) % SEED_LEN:
        raise CannotOpen("sealed keys")
    return seed


def sealed_cost(blob: bytes) -> KdfCost:
    """The Argon2id cost a sealed seed was made with (a rotation keeps it)."""
    if len(blob) < _SEALED_SEED_HEADER.size:
        raise CannotOpen("sealed keys")
    magic, opslimit, memlimit, _salt = _SEALED_SEED_HEADER.unpack_from(blob)
    if magic != SEALED_SEED_MAGIC:
        raise CannotOpen("sealed keys")
    return KdfCost(opslimit, memlimit)


# Domain-separation prefixes for everything the root signs.
GATEWAY_CERT_CONTEXT = b"sealgate-gateway-v1\0"


class RootKey:
    """The bubble administrator's Ed25519 root key."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)

    @classmethod
    def generate(cls) -> RootKey:
        return cls(nacl.utils.random(32))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def public(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(self, context: bytes, message: bytes) -> bytes:
        """Detached signature over context || message."""
        return bytes(self._key.sign(context + message).signature)

    def certify_gateway(self, gateway_verify_key: bytes) -> bytes:
        """A gateway certificate: the root's signature over the gateway's verify key."""
        return self.sign(GATEWAY_CERT_CONTEXT, gateway_verify_key)


def verify_root_signature(
    trusted_roots: tuple[bytes, ...], context: bytes, message: bytes, signature: bytes
) -> bytes | None:
    """Return the trusted root that made `signature` over context || message, else None."""
    for root in trusted_roots:
        try:
            nacl.signing.VerifyKey(root).verify(context + message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            continue
        return root
    return None


@dataclass(frozen=True)
class GatewayCredential:
    """What a gateway presents to relays when it deposits: its key and the root's cert."""

    seed: bytes  # Ed25519 seed of the gateway's own key
    certificate: bytes  # RootKey.certify_gateway(verify key)

    @classmethod
    def issue(cls, root: RootKey) -> GatewayCredential:
        key = nacl.signing.SigningKey.generate()
        return cls(seed=bytes(key), certificate=root.certify_gateway(bytes(key.verify_key)))

    @cached_property  # derived once: every deposit signs with it
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def verify_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)
