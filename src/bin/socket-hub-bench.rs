//! `socket-hub-bench`: the benchmark tool (`src/bench/`, BENCHMARKS.md).

// The same allocator as the hub: the tool shares the machine's two cores
// with it, and glibc's malloc was a tenth of the tool's CPU opening sessions.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    socket_hub::bench::main()
}
