//! `imprint-init`: PID 1 of the Imprint initramfs (as /init), and the menu it starts
//! (`imprint-init menu`).

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("menu") => std::process::exit(init::menu::run()),
        _ if std::process::id() == 1 => init::pid1(),
        _ => {
            eprintln!(
                "imprint-init: PID 1 of the Imprint boot environment; the kernel runs it as /init.\n\
                 usage: imprint-init menu   (the text menu on the current terminal)"
            );
            std::process::exit(2);
        }
    }
}
