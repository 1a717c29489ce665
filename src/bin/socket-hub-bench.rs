//! `socket-hub-bench`: the benchmark tool (`src/bench/`, BENCHMARKS.md).

fn main() -> std::process::ExitCode {
    socket_hub::bench::main()
}
