"""Who may do what: authentication, the user store, the audit log."""
