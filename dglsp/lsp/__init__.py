"""The LSP layer: handlers, transport and the document store; the only importer of pygls and lsprotocol."""
