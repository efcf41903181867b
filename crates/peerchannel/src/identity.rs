//! Node identity (being written).
