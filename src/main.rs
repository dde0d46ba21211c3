fn main() -> std::process::ExitCode {
    grasp_sync::cli::main()
}
