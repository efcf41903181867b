//! Resolvers (being written).
