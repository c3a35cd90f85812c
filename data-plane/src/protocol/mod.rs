//! Client protocols: how requests are recognised and how errors are shaped for each.

pub mod openai;
