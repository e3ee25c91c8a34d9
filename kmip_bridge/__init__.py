"""kmip-bridge: a KMIP server whose keys are envelope-encrypted under a KEK on a PKCS#11 token."""

__version__ = "0.1.0"
