//! Integration tests of the adapters against real pytest and cargo projects
//! under `fixtures/`.

mod cargo;
mod command;
mod pytest;
