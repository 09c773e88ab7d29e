//! Rebuilds the crate when a migration is added, so `sqlx::migrate!` embeds
//! it; says which test environments the tests may use (`shoal-testenv`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    shoal_testenv::emit();
}
