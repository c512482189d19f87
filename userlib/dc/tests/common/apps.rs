//! The four real programs the crash tests (`tests/bc.rs`, `ed.rs`, `nvi.rs`, `sc.rs`) and
//! the protocol study (`benches/apps.rs`) drive: defined once, in [`dc_drive::apps`]
//! (the guest's crash tests use the same), and made into a full-screen case here.

use anyhow::{bail, Result};

// Each test binary uses its own program of these.
#[allow(unused_imports)]
pub use dc_drive::apps::{App, Driver, ALL, BC, DC_ENV, ED, NVI, SC};

use super::screen::Program;

/// For [`super::screen::crash_case`]: a full-screen program's definition.
pub fn program(app: &'static App) -> Result<Program<'static>> {
    let Driver::Screen(pacing) = app.driver else {
        bail!("{} is not a full-screen program", app.name);
    };
    Ok(Program {
        binary: app.binary,
        args: app.args,
        env: &app.env,
        setup: &app.setup,
        dirs: app.dirs,
        session: app.session,
        pacing,
    })
}
