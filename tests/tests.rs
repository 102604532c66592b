//! Integration tests, one binary, modules by topic.

mod common;
mod fuzz;
mod gen;
mod golden;
mod reruns;
mod rules;
mod cli;
mod corpus;
mod crash;
mod monthly;
mod parquet;
mod properties;
