//! Says which test environments (Docker, PostgreSQL, network namespaces)
//! this build's tests may use: see `shoal-testenv`.

fn main() {
    shoal_testenv::emit();
}
