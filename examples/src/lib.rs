//! Examples for the registry workspace: a hello service, a gateway that discovers and balances over it, a CLI and an in-process demo.
