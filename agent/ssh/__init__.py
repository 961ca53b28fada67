"""SSH logins gated by consent: sshd's AuthorizedKeysCommand and the session hooks."""
