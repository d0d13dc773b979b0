"""The application layer: plain async functions per domain, the context and loaders."""
