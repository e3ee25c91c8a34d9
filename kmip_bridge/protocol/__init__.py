"""KMIP wire protocol: TTLV codec, messages and attribute encodings. Imports nothing of ours."""
