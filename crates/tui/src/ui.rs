//! Drawing. [`render`] reads the [`App`] and draws a frame; it changes nothing and
//! reads no clock, so a snapshot of a state is always the same screen.
//!
//! Only ASCII borders, the 8 basic colours, bold and reverse: what both the Linux VGA
//! console and a serial terminal show correctly.

use crate::app::{
    App, HomeFocus, JobKind, NetState, Popup, RestoreMode, Screen, LAYOUTS, NET_KINDS,
    RESTORE_OPTIONS, TOOLS,
};
use crate::model::{DiskRow, StoreRow};
use crate::update::{capture_fit, confirmation_matches, name_problem, Fit};
use disks::usage::human_size;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

const ASCII: border::Set = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}
fn red() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}
fn green() -> Style {
    Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
}
fn yellow() -> Style {
    Style::new().fg(Color::Yellow)
}
fn cyan() -> Style {
    Style::new().fg(Color::Cyan)
}
fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

pub(crate) fn block(title: &str) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .border_set(ASCII)
        .title(Span::styled(format!(" {title} "), bold()))
}

/// Cuts to `n` characters, marking the cut with `~`.
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else if n == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('~');
        t
    }
}

/// Word wrap to `width` columns (long words are cut).
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let need = if line.is_empty() { 0 } else { 1 } + word.chars().count();
        if !line.is_empty() && line.chars().count() + need > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&cut(word, width));
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

fn hms(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Lines in a bordered box, scrolled so line `sel` is visible and drawn reversed.
pub(crate) fn list(
    f: &mut Frame,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    sel: Option<usize>,
) {
    let inner_h = area.height.saturating_sub(2) as usize;
    let offset = match sel {
        Some(s) if inner_h > 0 && s >= inner_h => s + 1 - inner_h,
        _ => 0,
    };
    let lines: Vec<Line> = lines
        .into_iter()
        .enumerate()
        .skip(offset)
        .map(|(i, l)| {
            // A mark as well as reverse video: a monochrome serial terminal may
            // show no attributes at all.
            if Some(i) == sel {
                let mut spans = vec![Span::raw(">")];
                spans.extend(l.spans);
                Line::from(spans).patch_style(selected())
            } else {
                let mut spans = vec![Span::raw(" ")];
                spans.extend(l.spans);
                Line::from(spans).style(l.style)
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block(title)), area);
}

fn disk_line(d: &DiskRow) -> String {
    let mut flags = Vec::new();
    if !d.in_use.is_empty() || d.partitions.iter().any(|p| !p.in_use.is_empty()) {
        flags.push("IN USE");
    }
    if d.removable {
        flags.push("removable");
    }
    format!(
        "{:<13}{:>9} {:<6} {:<18} {:<16} {}",
        cut(&d.node.to_string_lossy(), 13),
        human_size(d.size),
        cut(&d.bus, 6),
        cut(d.model.as_deref().unwrap_or("-"), 18),
        cut(d.serial.as_deref().unwrap_or("-"), 16),
        cut(&flags.join(","), 11)
    )
}

fn part_lines(d: &DiskRow) -> Vec<Line<'static>> {
    d.partitions
        .iter()
        .map(|p| {
            let label = p
                .label
                .as_ref()
                .map(|l| format!("\"{l}\""))
                .unwrap_or_default();
            Line::raw(format!(
                "  {:<11}{:>9} {:<6} {:<18} {}",
                cut(&p.name, 10),
                human_size(p.size),
                cut(p.fs.as_deref().unwrap_or("-"), 6),
                cut(&label, 18),
                cut(&p.in_use.join(", "), 29)
            ))
        })
        .collect()
}

/// Disks with their partitions; returns the lines and the line of disk `sel`.
fn disk_lines(disks: &[DiskRow], sel: Option<usize>) -> (Vec<Line<'static>>, Option<usize>) {
    let mut lines = Vec::new();
    let mut at = None;
    for (i, d) in disks.iter().enumerate() {
        if Some(i) == sel {
            at = Some(lines.len());
        }
        lines.push(Line::styled(disk_line(d), bold()));
        lines.extend(part_lines(d));
    }
    if disks.is_empty() {
        lines.push(Line::raw(
            "(no disks found; a disk plugged in appears here)",
        ));
    }
    (lines, at)
}

fn image_header() -> Line<'static> {
    Line::styled(
        format!(
            "  {:<22} {:<10} {:>9} {:>9} {:>9} {}",
            "IMAGE", "DATE", "DISK", "USED", "STORED", "SOURCE"
        ),
        cyan(),
    )
}

fn store_lines(stores: &[StoreRow]) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for s in stores {
        lines.push(Line::styled(cut(&s.line(), 78), bold()));
        for i in s.images() {
            lines.push(match &i.error {
                Some(e) => Line::styled(
                    cut(&format!("  {:<22} DAMAGED: {e}", cut(&i.name, 22)), 78),
                    red(),
                ),
                None => Line::raw(format!(
                    "  {:<22} {:<10} {:>9} {:>9} {:>9} {}",
                    cut(&i.name, 22),
                    i.created.chars().take(10).collect::<String>(),
                    human_size(i.source_size),
                    human_size(i.used_bytes),
                    human_size(i.stored_bytes),
                    cut(&i.source_path, 11)
                )),
            });
        }
    }
    lines
}

/// The keys of each screen, shown on the last line.
pub fn help(app: &App) -> &'static str {
    if let Some(p) = &app.popup {
        return match p {
            Popup::Message { .. } => "Enter/Esc close",
            _ => "y yes   n/Esc no",
        };
    }
    match app.screen {
        Screen::Home => {
            "c capture  r restore  v verify  b browse  n net store  t tools  l log  Tab pane"
        }
        Screen::AddStore => "Up/Down field  Left/Right type  Enter next/connect  Esc back",
        Screen::CaptureName | Screen::CaptureDescription => {
            "type text   Backspace erase   Enter next   Esc back"
        }
        Screen::RestoreConfirm => {
            "type as asked   Enter start restore   Esc back (nothing written)"
        }
        Screen::CaptureSummary => "Enter start capture   Esc back",
        Screen::Progress => "Esc or c: cancel the job (asks first)",
        Screen::Result => match app.result.as_ref().and_then(|r| r.verify_offer.as_ref()) {
            Some(_) => "v verify the restored disk now   Enter home",
            None => "Enter home",
        },
        Screen::Log => "Up/Down PgUp/PgDn scroll   Esc back",
        Screen::Tools | Screen::Keyboard => "Up/Down choose   Enter select   Esc back",
        s @ (Screen::BrowseStore
        | Screen::BrowseImage
        | Screen::BrowsePartition
        | Screen::BrowseFiles
        | Screen::BrowseDest
        | Screen::BrowseDestPath) => crate::browser::help(s),
        _ => "Up/Down choose   Enter next   Esc back",
    }
}

fn screen_title(app: &App) -> &'static str {
    match app.screen {
        Screen::Home => "Home",
        Screen::CaptureSource => "Capture 1/5: source disk",
        Screen::CaptureStore => "Capture 2/5: store",
        Screen::CaptureName => "Capture 3/5: image name",
        Screen::CaptureDescription => "Capture 4/5: description",
        Screen::CaptureSummary => "Capture 5/5: summary",
        Screen::RestoreStore => "Restore 1/5: store",
        Screen::RestoreImage => "Restore 2/5: image",
        Screen::RestoreTarget => "Restore 3/5: target disk",
        Screen::RestoreOptions => "Restore 4/5: options",
        Screen::RestorePartition => "Restore 4/5: which partition",
        Screen::RestoreConfirm => "Restore 5/5: CONFIRM",
        Screen::VerifyStore => "Verify 1/3: store",
        Screen::VerifyImage => "Verify 2/3: image",
        Screen::VerifyMode | Screen::VerifyTarget => "Verify 3/3: what to check",
        Screen::Progress => "Working",
        Screen::Result => "Result",
        Screen::Tools => "Tools",
        Screen::Keyboard => "Keyboard layout",
        Screen::Log => "Log",
        Screen::AddStore => "Add a network store",
        s => crate::browser::title(s),
    }
}

/// Draws the whole screen.
pub fn render(app: &App, f: &mut Frame) {
    let area = f.area();
    let [top, body, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let head = format!(" Imprint {}  |  {}", app.version, screen_title(app));
    let kbd = format!("keyboard: {} ", app.layout);
    let pad = (top.width as usize).saturating_sub(head.chars().count() + kbd.chars().count());
    f.render_widget(
        Paragraph::new(format!("{head}{}{kbd}", " ".repeat(pad))).style(selected()),
        top,
    );
    match app.screen {
        Screen::Home => home(app, f, body),
        Screen::AddStore => add_store(app, f, body),
        Screen::CaptureSource => {
            let (lines, at) = disk_lines(&app.disks, Some(app.capture.source_sel));
            list(
                f,
                body,
                "Which disk to capture? (it is only read)",
                lines,
                at,
            );
        }
        Screen::CaptureStore => {
            let mut lines: Vec<Line> = app
                .writable_stores()
                .iter()
                .map(|s| Line::raw(cut(&s.line(), 78)))
                .collect();
            // Stores a capture cannot use, after the choices, with the reason.
            for s in app.stores.iter().filter(|s| !s.writable()) {
                if let Some(why) = &s.read_only {
                    lines.push(Line::styled(
                        cut(&format!("{}: {why}", s.name()), 77),
                        yellow(),
                    ));
                }
            }
            list(
                f,
                body,
                "Store the image where?",
                lines,
                Some(app.capture.store_sel),
            );
        }
        Screen::CaptureName | Screen::CaptureDescription => capture_text(app, f, body),
        Screen::CaptureSummary => capture_summary(app, f, body),
        Screen::RestoreStore | Screen::VerifyStore => {
            let stores = app.stores_with_images();
            let lines = stores
                .iter()
                .map(|s| Line::raw(cut(&s.line(), 78)))
                .collect();
            let sel = if app.screen == Screen::RestoreStore {
                app.restore.store_sel
            } else {
                app.verify.store_sel
            };
            list(f, body, "Which store holds the image?", lines, Some(sel));
        }
        Screen::RestoreImage | Screen::VerifyImage => image_choice(app, f, body),
        Screen::RestoreTarget => restore_target(app, f, body),
        Screen::RestoreOptions => {
            let lines = RESTORE_OPTIONS
                .iter()
                .map(|what| Line::raw(format!("  {what}")))
                .collect();
            list(
                f,
                body,
                "How to restore",
                lines,
                Some(app.restore.option_sel),
            );
        }
        Screen::RestorePartition => {
            let parts = app
                .restore
                .image
                .as_ref()
                .map(|i| i.partitions.as_slice())
                .unwrap_or_default();
            let target = app
                .restore
                .target
                .as_ref()
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let lines = parts
                .iter()
                .map(|p| {
                    Line::raw(cut(
                        &format!("  {}  -> partition {} of {target}", p.line, p.number),
                        76,
                    ))
                })
                .collect();
            list(
                f,
                body,
                "Restore which partition of the image? (the rest of the target is kept)",
                lines,
                Some(app.restore.part_sel),
            );
        }
        Screen::RestoreConfirm => confirm(app, f, body),
        Screen::VerifyMode => {
            let lines = vec![
                Line::raw("  Check the image: every stored chunk and the root hash"),
                Line::raw("  Compare a disk with the image (after a restore, or any time)"),
            ];
            list(f, body, "What to verify", lines, Some(app.verify.mode_sel));
        }
        Screen::VerifyTarget => {
            let (lines, at) = disk_lines(&app.disks, Some(app.verify.target_sel));
            list(f, body, "Compare which disk? (it is only read)", lines, at);
        }
        Screen::Progress => progress(app, f, body),
        Screen::Result => result(app, f, body),
        Screen::Tools => {
            let lines = TOOLS.iter().map(|t| Line::raw(format!("  {t}"))).collect();
            list(f, body, "Tools", lines, Some(app.tools_sel));
        }
        Screen::Keyboard => keyboard(app, f, body),
        Screen::BrowseStore
        | Screen::BrowseImage
        | Screen::BrowsePartition
        | Screen::BrowseFiles
        | Screen::BrowseDest
        | Screen::BrowseDestPath => crate::browser::render(app, f, body),
        Screen::Log => {
            let lines: Vec<Line> = if app.log.is_empty() {
                vec![Line::raw("(nothing logged yet)")]
            } else {
                app.log
                    .iter()
                    .skip(app.log_scroll)
                    .map(|l| Line::raw(l.clone()))
                    .collect()
            };
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(block("Log (this session)")),
                body,
            );
        }
    }
    if let Some(s) = &app.status {
        f.render_widget(
            Paragraph::new(cut(&format!(" {s}"), 80)).style(red()),
            status,
        );
    }
    f.render_widget(
        Paragraph::new(format!(" {}", help(app))).style(selected()),
        keys,
    );
    if let Some(p) = &app.popup {
        popup(app, p, f, body);
    }
}

fn home(app: &App, f: &mut Frame, body: Rect) {
    let focus_d = app.focus == HomeFocus::Disks;
    let (lines, at) = disk_lines(&app.disks, focus_d.then_some(app.disk_sel));
    // The disks take what they need, leaving the stores at least 8 rows.
    let want = lines.len() as u16 + 2;
    let [d, s] = Layout::vertical([
        Constraint::Length(want.min(body.height.saturating_sub(8)).max(3)),
        Constraint::Fill(1),
    ])
    .areas(body);
    list(f, d, "Disks", lines, at);
    let mut lines = vec![image_header()];
    lines.extend(store_lines(&app.stores));
    if app.stores.is_empty() {
        lines.push(Line::raw("(no stores configured)"));
    }
    let sel = (!focus_d).then_some(app.store_sel + 1);
    list(f, s, "Stores and images", lines, sel);
}

fn field(label: &str, value: &str, active: bool) -> Line<'static> {
    let mut spans = vec![Span::styled(format!("{label:<13}"), bold())];
    spans.push(Span::raw(value.to_owned()));
    if active {
        spans.push(Span::styled("_", selected()));
    }
    Line::from(spans)
}

fn add_store(app: &App, f: &mut Frame, body: Rect) {
    let n = &app.net;
    let typing = n.connecting.is_none();
    let kinds: Vec<Span> = NET_KINDS
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            let s = if i == n.kind {
                Span::styled(
                    format!("[{k}]"),
                    if n.field == 0 { selected() } else { bold() },
                )
            } else {
                Span::raw(format!(" {k} "))
            };
            [s, Span::raw(" ")]
        })
        .collect();
    let mut lines = vec![Line::from(
        [
            vec![Span::styled(format!("{:<13}", "Type:"), bold())],
            kinds,
        ]
        .concat(),
    )];
    lines.push(field("Server:", &n.host, typing && n.field == 1));
    lines.push(field(n.path_label(), &n.path, typing && n.field == 2));
    if n.is_smb() {
        let user = if n.user.is_empty() && n.field != 3 {
            "(empty: guest access)"
        } else {
            &n.user
        };
        lines.push(field("User:", user, typing && n.field == 3));
        // One `*` per character typed; the text itself is never drawn.
        let stars = "*".repeat(n.password.0.chars().count());
        lines.push(field("Password:", &stars, typing && n.field == 4));
    }
    lines.push(Line::raw(""));
    let location = if n.host.trim().is_empty() {
        "-".to_string()
    } else {
        n.location()
    };
    lines.push(field("Location:", &cut(&location, 64), false));
    if let Some(state) = &app.network {
        let (text, style) = match state {
            NetState::Starting => (
                "network: starting (DHCP on every wired port with a cable)...".to_string(),
                yellow(),
            ),
            NetState::Up(links) => (format!("network: {links}"), green()),
            NetState::Down(why) => (format!("no network: {why}"), red()),
        };
        for l in wrap(&text, 76) {
            lines.push(Line::styled(l, style));
        }
    }
    lines.push(Line::raw(""));
    let about = match n.kind {
        0 => "Mounted with the kernel's SMB 3 client (no SMB1). Images can be captured into the share when the user may write it. Example: server fs1, share images/pcs.",
        1 => "Mounted with the kernel's NFS 4.1 client. Images can be captured into the export when it is writable. Example: server nas, export srv/imprint.",
        _ => "Read over HTTP range requests: restore and verify only, no capture. Server may carry a port (10.0.0.5:8080); path is the store's folder on the web server.",
    };
    for l in wrap(about, 76) {
        lines.push(Line::styled(l, cyan()));
    }
    lines.push(Line::raw(""));
    if let Some(loc) = &n.connecting {
        lines.push(Line::styled(
            cut(&format!("Connecting to {loc}..."), 76),
            yellow(),
        ));
    } else if let Some(e) = &n.error {
        for l in wrap(&format!("Not connected: {e}"), 76) {
            lines.push(Line::styled(l, red()));
        }
    } else {
        lines.push(Line::styled(
            "Enter on the last field connects and lists the store's images.",
            green(),
        ));
    }
    f.render_widget(
        Paragraph::new(lines).block(block("Add a network store")),
        body,
    );
}

fn capture_text(app: &App, f: &mut Frame, body: Rect) {
    let c = &app.capture;
    let naming = app.screen == Screen::CaptureName;
    let mut lines = vec![
        field(
            "Source:",
            &cut(
                &c.source.as_ref().map(|d| d.title()).unwrap_or_default(),
                64,
            ),
            false,
        ),
        field(
            "Store:",
            &c.store.as_ref().map(|s| s.name()).unwrap_or_default(),
            false,
        ),
        Line::raw(""),
        field("Name:", &c.name, naming),
    ];
    if naming {
        match name_problem(app) {
            None => lines.push(Line::styled("             ok", green())),
            Some(p) => {
                for l in wrap(&p, 64) {
                    lines.push(Line::styled(format!("             {l}"), red()));
                }
            }
        }
        lines.push(Line::raw(""));
        lines.push(Line::raw(
            "Letters, digits, spaces, - _ . and the like; no / \\ : * ? \" < > |",
        ));
        lines.push(Line::raw(
            "(the store may be on FAT32, exFAT, NTFS or a Windows share).",
        ));
    } else {
        lines.push(Line::raw(""));
        lines.push(field("Description:", &c.description, true));
        lines.push(Line::raw(""));
        lines.push(Line::raw(
            "Free text kept with the image (optional): what is on it, who made it.",
        ));
    }
    f.render_widget(
        Paragraph::new(lines).block(block(if naming {
            "Name the image"
        } else {
            "Describe the image"
        })),
        body,
    );
}

fn capture_summary(app: &App, f: &mut Frame, body: Rect) {
    let c = &app.capture;
    let fit = capture_fit(app);
    let disk_size = c.source.as_ref().map(|d| d.size).unwrap_or(0);
    let mut lines = vec![
        field(
            "Source:",
            &cut(
                &c.source.as_ref().map(|d| d.title()).unwrap_or_default(),
                64,
            ),
            false,
        ),
        field(
            "Store:",
            &cut(&c.store.as_ref().map(|s| s.name()).unwrap_or_default(), 64),
            false,
        ),
        field("Name:", &c.name, false),
        field("Description:", &cut(&c.description, 64), false),
        Line::raw(""),
    ];
    let indent = |text: &str, first: &str, style: Style, lines: &mut Vec<Line<'static>>| {
        for (i, l) in wrap(text, 64).into_iter().enumerate() {
            let head = if i == 0 { first } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!("{head:<13}"), bold()),
                Span::styled(l, style),
            ]));
        }
    };
    let reads = match (&c.preview, &fit.unplanned) {
        (None, _) => "measuring: reading the partition table and filesystems...".to_string(),
        (_, Some(e)) => format!(
            "the whole {} disk (it could not be planned: {e})",
            human_size(disk_size)
        ),
        (Some(_), None) => format!(
            "{} of the {} disk: partition tables, boot areas and the blocks its \
             filesystems use. The disk is only read, never written.",
            human_size(fit.read),
            human_size(disk_size)
        ),
    };
    indent(&reads, "Reads:", Style::new(), &mut lines);
    let size = match fit.estimate {
        _ if c.preview.is_none() => "known once the disk is measured".to_string(),
        Some(e) => format!(
            "at most {}; about {} at the compression of the images already in this \
             store (data they share is not stored twice)",
            human_size(fit.read),
            human_size(e)
        ),
        None => format!(
            "at most {}, less after compression (data already in the store is not stored twice)",
            human_size(fit.read)
        ),
    };
    indent(&size, "Image size:", Style::new(), &mut lines);
    indent(
        &fit.free.map(human_size).unwrap_or_else(|| "unknown".into()),
        "Free space:",
        Style::new(),
        &mut lines,
    );
    if let Some(Ok(p)) = &c.preview {
        for w in p.warnings.iter().take(2) {
            indent(w, "Note:", yellow(), &mut lines);
        }
    }
    lines.push(Line::raw(""));
    let (text, style) = match &fit.verdict {
        Fit::Refused(r) => (format!("Cannot capture: {r}"), red()),
        Fit::Measuring => ("Measuring the disk...".to_string(), yellow()),
        Fit::Warn(w) => (format!("{w} Press Enter to start the capture."), yellow()),
        Fit::Fits => ("Press Enter to start the capture.".to_string(), green()),
    };
    for l in wrap(&text, 76) {
        lines.push(Line::styled(l, style));
    }
    f.render_widget(Paragraph::new(lines).block(block("Ready to capture")), body);
}

fn image_choice(app: &App, f: &mut Frame, body: Rect) {
    let (store, sel) = if app.screen == Screen::RestoreImage {
        (app.restore.store.clone(), app.restore.image_sel)
    } else {
        (app.verify.store.clone(), app.verify.image_sel)
    };
    image_list(app, f, body, &store.unwrap_or_default(), sel);
}

/// The images of `store` with the details of image `sel`.
pub(crate) fn image_list(
    app: &App,
    f: &mut Frame,
    body: Rect,
    store: &std::path::Path,
    sel: usize,
) {
    let images = app.images_of(store);
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
    let mut lines = vec![image_header()];
    lines.extend(images.iter().map(|i| {
        Line::raw(format!(
            "  {:<22} {:<10} {:>9} {:>9} {:>9} {}",
            cut(&i.name, 22),
            i.created.chars().take(10).collect::<String>(),
            human_size(i.source_size),
            human_size(i.used_bytes),
            human_size(i.stored_bytes),
            cut(&i.source_path, 11)
        ))
    }));
    list(f, top, "Which image?", lines, Some(sel + 1));
    let mut d = Vec::new();
    if let Some(i) = images.get(sel) {
        d.push(field("Created:", &i.created, false));
        d.push(field("Description:", &cut(&i.description, 62), false));
        d.push(field(
            "Source disk:",
            &format!(
                "{} ({}, {}-byte sectors)",
                i.source_path,
                human_size(i.source_size),
                i.logical_sector_size
            ),
            false,
        ));
        d.push(field("Table:", &i.table, false));
        if i.partitions.is_empty() {
            d.push(Line::raw("             (no partitions recorded)"));
        }
        for p in &i.partitions {
            d.push(Line::raw(format!("             {}", cut(&p.line, 62))));
        }
    }
    f.render_widget(Paragraph::new(d).block(block("Image details")), bottom);
}

fn restore_target(app: &App, f: &mut Frame, body: Rect) {
    let mut lines = Vec::new();
    let mut at = None;
    for (i, d) in app.disks.iter().enumerate() {
        let check = app.restore.checks.iter().find(|c| c.node == d.node);
        let refused = check.is_some_and(|c| c.refusal.is_some());
        if i == app.restore.target_sel {
            at = Some(lines.len());
        }
        let style = if refused { yellow() } else { bold() };
        lines.push(Line::styled(disk_line(d), style));
        match check {
            None => lines.push(Line::raw("    checking...")),
            Some(c) => {
                if let Some(r) = &c.refusal {
                    let w = wrap(&format!("REFUSED: {r}"), 72);
                    let n = w.len();
                    for (k, l) in w.into_iter().take(3).enumerate() {
                        let l = if k == 2 && n > 3 {
                            cut(&format!("{l} ..."), 72)
                        } else {
                            l
                        };
                        lines.push(Line::styled(format!("    {l}"), yellow()));
                    }
                } else {
                    let note = c
                        .note
                        .clone()
                        .unwrap_or_else(|| "no data Imprint can see".into());
                    lines.push(Line::styled(
                        cut(&format!("    OK, will be erased; {note}"), 76),
                        green(),
                    ));
                }
            }
        }
    }
    if app.disks.is_empty() {
        lines.push(Line::raw("(no disks found)"));
    }
    let name = app
        .restore
        .image
        .as_ref()
        .map(|i| format!("Restore \"{}\" onto which disk?", cut(&i.name, 40)))
        .unwrap_or_default();
    list(f, body, &name, lines, at);
}

fn confirm(app: &App, f: &mut Frame, body: Rect) {
    let Some(v) = &app.restore.confirm else {
        return;
    };
    let mut lines: Vec<Line> = Vec::new();
    if let Some(first) = v.plan_lines.first() {
        lines.extend(wrap(first, 78).into_iter().take(2).map(Line::raw));
    }
    lines.push(Line::raw(""));
    let part = match app.restore.mode {
        RestoreMode::Partition(n) => Some(n),
        _ => None,
    };
    lines.push(match part {
        Some(n) => Line::styled(
            format!("PARTITION {n} OF THIS DISK WILL BE OVERWRITTEN (the rest is kept):"),
            red(),
        ),
        None => Line::styled("THIS DISK WILL BE ERASED:", red()),
    });
    lines.push(field("  Disk:", &v.target.display().to_string(), false));
    lines.push(field(
        "  Model:",
        v.model.as_deref().unwrap_or("(unknown)"),
        false,
    ));
    lines.push(field(
        "  Serial:",
        v.serial.as_deref().unwrap_or("(none)"),
        false,
    ));
    lines.push(field(
        "  Size:",
        &format!("{} ({} bytes)", human_size(v.size), v.size),
        false,
    ));
    if v.destroyed.is_empty() {
        lines.push(Line::raw(
            "  It holds no partition table or data that Imprint can see.",
        ));
    } else {
        lines.push(Line::styled(
            match part {
                Some(_) => "  This will be destroyed:",
                None => "  Everything on it will be destroyed:",
            },
            red(),
        ));
        let max = 5;
        for p in v.destroyed.iter().take(max) {
            lines.push(Line::raw(format!("    {}", cut(p, 70))));
        }
        if v.destroyed.len() > max {
            lines.push(Line::raw(format!(
                "    ... and {} more",
                v.destroyed.len() - max
            )));
        }
    }
    if app.restore.mode == RestoreMode::GrowLast {
        lines.push(Line::raw(
            "  Then its last partition and filesystem grow to the end of the disk.",
        ));
    }
    lines.push(Line::raw(""));
    if v.word_is_serial {
        lines.push(Line::raw(
            "To confirm, type the LAST 4 CHARACTERS of the serial number above:",
        ));
    } else {
        lines.push(Line::raw(format!(
            "This disk reports no serial number. To confirm, type the word {}:",
            v.word
        )));
    }
    lines.push(Line::from(vec![
        Span::raw("  > "),
        Span::styled(app.restore.typed.clone(), bold()),
        Span::styled("_", selected()),
    ]));
    if app.restore.mismatch {
        lines.push(Line::styled(
            "That does not match. Nothing was written; the restore stays locked.",
            red(),
        ));
    } else if confirmation_matches(v, &app.restore.typed) {
        lines.push(Line::styled(
            match part {
                Some(n) => format!("Matches. Press Enter to OVERWRITE partition {n} and restore."),
                None => "Matches. Press Enter to ERASE this disk and restore.".into(),
            },
            green(),
        ));
    } else {
        lines.push(Line::raw("Locked until the text matches. Esc goes back."));
    }
    f.render_widget(
        Paragraph::new(lines).block(block("Confirm: this cannot be undone")),
        body,
    );
}

/// `[#####.....]` of `width` cells: plain ASCII so a serial console shows it too.
fn gauge(done: u64, total: u64, width: usize) -> String {
    let inner = width.saturating_sub(2);
    let filled = (done as u128 * inner as u128)
        .checked_div(total as u128)
        .unwrap_or(0)
        .min(inner as u128) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(inner - filled))
}

fn progress(app: &App, f: &mut Frame, body: Rect) {
    let j = &app.job;
    let p = &j.progress;
    let pct = if p.total_bytes == 0 {
        0.0
    } else {
        p.done_bytes as f64 * 100.0 / p.total_bytes as f64
    };
    let mut lines = vec![
        Line::styled(cut(&j.title, 76), bold()),
        Line::raw(""),
        field("Phase:", &j.phase, false),
        Line::from(vec![
            Span::styled(gauge(p.done_bytes, p.total_bytes, 68), cyan()),
            Span::raw(format!(" {pct:>5.1}%")),
        ]),
        field(
            "Done:",
            &format!(
                "{} of {}",
                human_size(p.done_bytes),
                human_size(p.total_bytes)
            ),
            false,
        ),
        field(
            "Rate:",
            &format!(
                "{} now, {} average",
                j.current_rate()
                    .map(|r| format!("{}/s", human_size(r)))
                    .unwrap_or_else(|| "-".into()),
                j.average_rate()
                    .map(|r| format!("{}/s", human_size(r)))
                    .unwrap_or_else(|| "-".into())
            ),
            false,
        ),
        field(
            "Elapsed:",
            &format!(
                "{}   ETA {}",
                hms(j.elapsed_ms),
                j.eta_secs()
                    .map(|s| hms(s * 1000))
                    .unwrap_or_else(|| "-".into())
            ),
            false,
        ),
        if j.kind == Some(JobKind::Copy) {
            field(
                "Files:",
                &format!("{} of {} copied", p.done_chunks, p.total_chunks),
                false,
            )
        } else {
            field(
                "Chunks:",
                &format!(
                    "{} of {} done, {} written, {} skipped",
                    p.done_chunks, p.total_chunks, p.written_chunks, p.skipped_chunks
                ),
                false,
            )
        },
    ];
    if j.cancel_requested {
        lines.push(Line::styled(
            "Cancelling: the job stops at the next chunk boundary...",
            yellow(),
        ));
    }
    let [top, log] = Layout::vertical([Constraint::Length(11), Constraint::Min(3)]).areas(body);
    f.render_widget(Paragraph::new(lines).block(block("Progress")), top);
    let h = log.height.saturating_sub(2) as usize;
    let tail: Vec<Line> = app
        .log
        .iter()
        .skip(app.log.len().saturating_sub(h))
        .map(|l| Line::raw(cut(l, 76)))
        .collect();
    f.render_widget(Paragraph::new(tail).block(block("Log")), log);
}

fn result(app: &App, f: &mut Frame, body: Rect) {
    let Some(r) = &app.result else {
        return;
    };
    let mut lines = vec![Line::styled(cut(&r.title, 76), bold()), Line::raw("")];
    match &r.outcome {
        Ok(s) => {
            lines.push(Line::styled("SUCCESS", green()));
            for l in wrap(&s.headline, 76) {
                lines.push(Line::styled(l, green()));
            }
            for l in &s.lines {
                for w in wrap(l, 76) {
                    lines.push(Line::raw(w));
                }
            }
        }
        Err(e) => {
            let what = match (e.kind.as_str(), r.kind) {
                ("cancelled", _) => "CANCELLED",
                ("refused", _) => "REFUSED",
                ("mismatch", _) => "MISMATCH",
                (_, JobKind::Verify) => "VERIFY FAILED",
                _ => "FAILED",
            };
            lines.push(Line::styled(
                format!("{what} (exit code {})", e.exit_code),
                red(),
            ));
            for l in wrap(&e.message, 76) {
                lines.push(Line::raw(l));
            }
            lines.push(Line::raw(""));
            lines.push(Line::styled("What to do:", bold()));
            for a in &e.advice {
                for l in wrap(a, 74) {
                    lines.push(Line::raw(format!("  {l}")));
                }
            }
        }
    }
    if !r.warnings.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!("Warnings ({}):", r.warnings.len()),
            yellow(),
        ));
        for w in &r.warnings {
            for l in wrap(w, 74) {
                lines.push(Line::styled(format!("  {l}"), yellow()));
            }
        }
    }
    if r.verify_offer.is_some() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            "Press v to compare the disk with the image now (recommended).",
            cyan(),
        ));
    }
    f.render_widget(Paragraph::new(lines).block(block("Result")), body);
}

fn keyboard(app: &App, f: &mut Frame, body: Rect) {
    let [top, bottom] = Layout::vertical([Constraint::Length(6), Constraint::Min(3)]).areas(body);
    let lines = LAYOUTS
        .iter()
        .map(|(code, name)| {
            let mark = if *code == app.layout { "*" } else { " " };
            Line::raw(format!(" {mark} {code:<4} {name}"))
        })
        .collect();
    list(f, top, "Keyboard layout", lines, Some(app.layout_sel));
    let note = app
        .layout_note
        .clone()
        .unwrap_or_else(|| "The layout in use is marked *.".into());
    f.render_widget(
        Paragraph::new(
            wrap(&note, 76)
                .into_iter()
                .map(Line::raw)
                .collect::<Vec<_>>(),
        )
        .block(block("Status")),
        bottom,
    );
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn popup(app: &App, p: &Popup, f: &mut Frame, body: Rect) {
    let (title, text): (String, Vec<String>) = match p {
        Popup::ConfirmCancel => {
            let what = match app.job.kind {
                Some(JobKind::Restore) => "Stop the restore? The disk will be left UNUSABLE (its partition table areas are zeroed) until you restore again.",
                Some(JobKind::Capture) => "Stop the capture? No image is saved; earlier images stay intact.",
                _ => "Stop the verification? Nothing will have been proven.",
            };
            (
                "Cancel the job?".into(),
                vec![
                    what.into(),
                    String::new(),
                    "y = stop it, n = keep going".into(),
                ],
            )
        }
        Popup::ConfirmReboot => (
            "Reboot?".into(),
            vec![
                "Restart the computer now?".into(),
                String::new(),
                "y = reboot, n = no".into(),
            ],
        ),
        Popup::ConfirmPowerOff => (
            "Power off?".into(),
            vec![
                "Switch the computer off now?".into(),
                String::new(),
                "y = power off, n = no".into(),
            ],
        ),
        Popup::Message { title, lines } => {
            let mut v = lines.clone();
            v.push(String::new());
            v.push("Enter: close".into());
            (title.clone(), v)
        }
    };
    let width = 64usize;
    let lines: Vec<Line> = text
        .iter()
        .flat_map(|t| wrap(t, width - 4))
        .map(Line::raw)
        .collect();
    let area = centered(body, width as u16, lines.len() as u16 + 2);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines).block(block(&title).style(bold())),
        area,
    );
}
