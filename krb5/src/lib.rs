//! Kerberos 5 credentials for AFS tokens, as aklog gets them.
