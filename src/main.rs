//! The `chatroom` binary. Everything lives in the library; the command
//! line is `chatroom::cmd`.

fn main() {
    std::process::exit(chatroom::cmd::main());
}
