//! TLS for links (being written).
