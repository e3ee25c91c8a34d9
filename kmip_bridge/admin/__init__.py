"""Administrative use cases behind the CLI: making an instance and its PKI, rewrapping DEKs,
checking the store and the KEKs. Each joins the layers (keyhsm, store, operations) for one job."""
