mod plugin;

fn main() -> std::process::ExitCode {
    plugd::main(plugd::Registry::builder().plugin(plugin::Greet))
}
