"""Encryption at rest of API key secrets: Fernet (AES-128-CBC + HMAC-SHA256), rotatable.

``API_KEY_ENCRYPTION_KEYS`` lists Fernet keys, newest first: the first encrypts, every one of them
decrypts, so a new key can be put in front and ``manage.py rotate_api_key_secrets`` re-encrypts
every stored secret with it before the old key is dropped. Unset (a laptop), one key is derived
from SECRET_KEY; that derived key always stays last in the list, so secrets stored before
``API_KEY_ENCRYPTION_KEYS`` was first set still decrypt, and rotate to the new key.
"""

import base64
from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


def derived_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"exchange api key secrets")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


@cache
def cipher() -> MultiFernet:
    keys = [*settings.API_KEY_ENCRYPTION_KEYS, derived_key().decode()]
    return MultiFernet([Fernet(key) for key in dict.fromkeys(keys)])


def encrypt_secret(secret: str) -> str:
    return cipher().encrypt(secret.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    return cipher().decrypt(ciphertext.encode()).decode()


def reencrypt_secret(ciphertext: str) -> str:
    return cipher().rotate(ciphertext.encode()).decode()
