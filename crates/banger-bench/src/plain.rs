//! The baseline: QEMU started by hand with the same kernel, initramfs, root
//! file system and devices that banger uses, timed until the guest agent has
//! run `true`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banger_agent_proto::{
    Decoder, ExecRequest, ExitStatus, Frame, FrameKind, Hello, HelloAck, decode_json, encode,
    encode_json,
};
use banger_api::paths::Paths;

/// Work disk size of each run; sparse, so its size costs nothing.
const WORK_DISK_BYTES: u64 = 8 << 30;
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

pub struct Setup {
    bzimage: PathBuf,
    initrd: PathBuf,
    image: PathBuf,
    agent: PathBuf,
    tsc_khz: Option<u64>,
}

impl Setup {
    /// Finds the default kernel, its initramfs and the default image in the
    /// cache of the user's banger.
    pub fn from_banger_cache(agent: &Path) -> anyhow::Result<Self> {
        let paths = Paths::from_env();
        let kernels = banger_json(&["kernel", "list", "--json"])?;
        let images = banger_json(&["image", "list", "--json"])?;
        let kernel_sha = first_sha(&kernels, banger_model::DEFAULT_KERNEL)?;
        let image_sha = first_sha(&images, banger_model::DEFAULT_IMAGE)?;
        let kernel = banger_image::kernel::load(&paths.cache_dir, &kernel_sha)?;
        let initrd = banger_image::kernel::build_initramfs(&kernel, agent, &paths.cache_dir)?;
        Ok(Self {
            bzimage: kernel.qemu_image()?.to_path_buf(),
            initrd,
            image: banger_image::image::image_path(&paths.cache_dir, &image_sha),
            agent: agent.to_path_buf(),
            tsc_khz: host_tsc_khz(),
        })
    }

    /// Prepares fresh disks (untimed), then boots, runs `true` through the
    /// agent and kills QEMU (timed).
    pub fn run_once(&self, vcpus: u32, memory_mib: u32) -> anyhow::Result<Duration> {
        let dir = tempfile::Builder::new().prefix("bgb").tempdir_in("/tmp")?;
        let root = dir.path().join("rootfs.ext4");
        let work = dir.path().join("work.ext4");
        banger_image::disk::clone_disk(&self.image, &root)?;
        banger_image::image::inject_files(
            &root,
            &[banger_image::image::InjectFile {
                host_path: self.agent.clone(),
                guest_path: "/usr/local/bin/banger-agent".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            }],
        )?;
        banger_image::disk::create_work_disk(&work, WORK_DISK_BYTES)?;
        let socket = dir.path().join("agent.sock");

        let start = Instant::now();
        let mut qemu = self.spawn(dir.path(), &root, &work, &socket, vcpus, memory_mib)?;
        let result = run_true(&socket, &mut qemu);
        let _ = qemu.kill();
        let _ = qemu.wait();
        let elapsed = start.elapsed();
        result?;
        Ok(elapsed)
    }

    fn spawn(
        &self,
        dir: &Path,
        root: &Path,
        work: &Path,
        socket: &Path,
        vcpus: u32,
        memory_mib: u32,
    ) -> anyhow::Result<Child> {
        let mut append = String::from(banger_vmm::qemu::CONSOLE_CMDLINE);
        if let Some(khz) = self.tsc_khz {
            append.push_str(&format!(" tsc_early_khz={khz}"));
        }
        append.push_str(
            " root=LABEL=bangerroot rw panic=-1 quiet loglevel=4 systemd.show_status=false",
        );
        let drive = |id: &str, path: &Path| {
            format!(
                "if=none,id={id},format=raw,cache=writeback,file={}",
                path.display()
            )
        };
        Command::new("qemu-system-x86_64")
            .args(["-machine", "microvm,acpi=on,x-option-roms=off,pic=off"])
            .args(["-accel", "tcg", "-cpu", "max"])
            .args(["-smp", &vcpus.to_string(), "-m", &format!("{memory_mib}M")])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&self.bzimage)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &append])
            .args([
                "-serial",
                &format!("file:{}", dir.join("console.log").display()),
            ])
            .args([
                "-drive",
                &drive("disk0", root),
                "-device",
                "virtio-blk-device,drive=disk0",
            ])
            .args([
                "-drive",
                &drive("disk1", work),
                "-device",
                "virtio-blk-device,drive=disk1",
            ])
            .args([
                "-chardev",
                &format!(
                    "socket,id=agent,server=on,wait=off,path={}",
                    socket.display()
                ),
                "-device",
                "virtio-serial-device",
                "-device",
                "virtserialport,chardev=agent,name=banger.agent",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start qemu-system-x86_64")
    }
}

/// Waits for the agent's handshake, runs `true` and returns its status.
fn run_true(socket: &Path, qemu: &mut Child) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + BOOT_DEADLINE;
    let mut stream = loop {
        if let Some(status) = qemu.try_wait()? {
            bail!("QEMU exited before the agent replied ({status})");
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not reply within {} s",
                BOOT_DEADLINE.as_secs()
            );
        }
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_millis(250)))?;
    let nonce = 42;
    let hello = encode(&Frame::new(
        FrameKind::Hello,
        0,
        encode_json(&Hello {
            nonce,
            host_version: "bench".into(),
        }),
    ))?;
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut next_hello = Instant::now();
    // Handshake: resend Hello once a second until the agent replies.
    'handshake: loop {
        if Instant::now() > deadline {
            bail!(
                "the agent did not reply within {} s",
                BOOT_DEADLINE.as_secs()
            );
        }
        if Instant::now() >= next_hello {
            stream.write_all(&hello)?;
            next_hello = Instant::now() + Duration::from_secs(1);
        }
        read_some(&mut stream, &mut decoder, &mut buf)?;
        while let Some(frame) = decoder.next_frame() {
            if frame.kind == FrameKind::HelloAck
                && decode_json::<HelloAck>(&frame.payload).is_ok_and(|ack| ack.nonce == nonce)
            {
                break 'handshake;
            }
        }
    }
    let request = ExecRequest {
        argv: vec!["true".into()],
        cwd: Some("/root".into()),
        ..Default::default()
    };
    stream.write_all(&encode(&Frame::new(
        FrameKind::ExecStart,
        1,
        encode_json(&request),
    ))?)?;
    loop {
        if Instant::now() > deadline {
            bail!("`true` did not finish before the deadline");
        }
        read_some(&mut stream, &mut decoder, &mut buf)?;
        while let Some(frame) = decoder.next_frame() {
            if frame.kind == FrameKind::Exit && frame.stream == 1 {
                return Ok(decode_json(&frame.payload)?);
            }
        }
    }
}

fn read_some(stream: &mut UnixStream, decoder: &mut Decoder, buf: &mut [u8]) -> anyhow::Result<()> {
    match stream.read(buf) {
        Ok(0) => bail!("the agent socket closed"),
        Ok(n) => decoder.push(&buf[..n]),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn banger_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let bin = std::env::var_os("BANGER_BIN_DIR")
        .map_or_else(|| PathBuf::from("target/banger"), PathBuf::from);
    let output = Command::new(bin.join("banger")).args(args).output()?;
    if !output.status.success() {
        bail!(
            "banger {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn first_sha(list: &serde_json::Value, name: &str) -> anyhow::Result<String> {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .and_then(|item| item["sha256"].as_str())
        .map(str::to_string)
        .with_context(|| format!("{name} is not in banger's catalog; run banger vm run once"))
}

/// Measures the host TSC rate in kHz the way banger's QEMU backend does
/// it, so both sides boot with the same `tsc_early_khz`.
fn host_tsc_khz() -> Option<u64> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?
        .block_on(banger_vmm::qemu::host_tsc_khz())
}
