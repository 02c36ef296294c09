//! The three roles as real processes: telemetry reaches the ground, and a command sent at the
//! ground is executed by the simulator, acknowledged, and visible in later telemetry.

mod common;

use common::{HK_APIDS, Setup, eventually, get_json, http, wait_ready};
use vfep::roles::ground::{CommandEntry, CommandState, Parameters};

fn value_of(parameters: &Parameters, apid: u16, name: &str) -> Option<String> {
    parameters
        .parameter
        .iter()
        .find(|p| p.apid == apid && p.name == name)
        .map(|p| p.value.clone())
}

#[tokio::test]
async fn telemetry_flows_and_commands_are_executed_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path());
    setup.write_config();
    let _simulator = setup.start("simulator");
    let _frontend = setup.start("frontend");
    let _ground = setup.start("ground");
    wait_ready(&setup.ground_url("/readyz")).await;

    // Telemetry: every housekeeping APID reaches the ground and keeps updating.
    let first: Parameters = eventually("housekeeping of both APIDs at the ground", || async {
        let p: Parameters = get_json(&setup.ground_url("/api/v1/parameters")).await?;
        HK_APIDS
            .iter()
            .all(|&apid| value_of(&p, apid, "uptimeS").is_some())
            .then_some(p)
    })
    .await;
    let first_time = first.parameter[0].onboard_time.clone();
    eventually("newer housekeeping", || async {
        let p: Parameters = get_json(&setup.ground_url("/api/v1/parameters")).await?;
        (p.parameter[0].onboard_time > first_time).then_some(())
    })
    .await;
    assert_eq!(
        value_of(&first, HK_APIDS[0], "mode").as_deref(),
        Some("NOMINAL")
    );

    // Commands: SET_MODE at the ground, executed and acknowledged by the simulator.
    for (command, argument, parameter, expected) in [
        ("SET_MODE", "SCIENCE", "mode", "SCIENCE"),
        ("SET_HEATER", "31.5", "heaterSetpointC", "31.50"),
    ] {
        let response = http()
            .post(setup.ground_url("/api/v1/commands"))
            .json(&serde_json::json!({"command": command, "argument": argument}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        let sent: CommandEntry = response.json().await.unwrap();
        assert_eq!(sent.state, CommandState::Sent);

        let done = eventually("the acknowledgement", || async {
            let c: vfep::roles::ground::Commands =
                get_json(&setup.ground_url("/api/v1/commands")).await?;
            c.command
                .into_iter()
                .find(|e| e.sequence_count == sent.sequence_count && e.apid == sent.apid)
                .filter(|e| matches!(e.state, CommandState::Executed | CommandState::Rejected))
        })
        .await;
        assert_eq!(done.state, CommandState::Executed, "{done:?}");

        // Later telemetry shows the effect, on every housekeeping APID.
        eventually("telemetry showing the command's effect", || async {
            let p: Parameters = get_json(&setup.ground_url("/api/v1/parameters")).await?;
            HK_APIDS
                .iter()
                .all(|&apid| value_of(&p, apid, parameter).as_deref() == Some(expected))
                .then_some(())
        })
        .await;
    }

    // The vehicle's own view agrees, and the frontend counted the TCs it forwarded.
    let vehicle: serde_json::Value = get_json(&setup.simulator_url("/api/v1/vehicle"))
        .await
        .unwrap();
    assert_eq!(vehicle["mode"], "SCIENCE");
    assert_eq!(vehicle["commandsAccepted"], 2);
    // Out: 2 TCs to the vehicle, and to the ground their 2 echoes and 2 acknowledgements.
    eventually("the frontend's command channel count", || async {
        let channels: vfep::api::rest::Channels =
            get_json(&setup.frontend_url("/api/v1/channels")).await?;
        let commands = channels
            .channel
            .into_iter()
            .find(|c| c.name == "commands")?;
        (commands.packets_in == 4 && commands.packets_out == 6).then_some(())
    })
    .await;

    // A command the ground cannot form is refused before it leaves.
    let bad = http()
        .post(setup.ground_url("/api/v1/commands"))
        .json(&serde_json::json!({"command": "SET_MODE", "argument": "PANIC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
