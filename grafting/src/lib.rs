//! grafting
