use super::*;

const UID: &str = "1234abcd-5678-90ef-abcd-1234567890ab";
const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The expected parse of a path that names a pod (table rows compare Options).
#[allow(clippy::unnecessary_wraps)]
fn pod(uid: &str, cid: Option<&str>, runtime: Option<ContainerRuntime>) -> Option<PodCgroup> {
    Some(PodCgroup {
        pod_uid: uid.into(),
        container_id: cid.map(Into::into),
        runtime,
    })
}

#[test]
fn kubelet_paths() {
    let u = UID.replace('-', "_");
    let cases: Vec<(String, Option<PodCgroup>)> = vec![
        // systemd driver, each QoS class
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope"
            ),
            pod(UID, Some(CID), Some(ContainerRuntime::Containerd)),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{CID}.scope"
            ),
            pod(UID, Some(CID), Some(ContainerRuntime::CriO)),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{CID}.scope"),
            pod(UID, Some(CID), Some(ContainerRuntime::Docker)),
        ),
        // the pod-level cgroup itself
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
            pod(UID, None, None),
        ),
        // cgroupfs driver
        (
            format!("/kubepods/burstable/pod{UID}/{CID}"),
            pod(UID, Some(CID), None),
        ),
        (
            format!("/kubepods/besteffort/pod{UID}/{CID}"),
            pod(UID, Some(CID), None),
        ),
        (
            format!("/kubepods/pod{UID}/{CID}"),
            pod(UID, Some(CID), None),
        ),
        (format!("/kubepods/pod{UID}"), pod(UID, None, None)),
        // nested roots (kind, k3s), /proc/PID/cgroup line prefix, upper case
        (
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{CID}.scope"
            ),
            pod(UID, Some(CID), Some(ContainerRuntime::Containerd)),
        ),
        (
            format!("0::/kubelet/kubepods/burstable/pod{UID}/{CID}\n"),
            pod(UID, Some(CID), None),
        ),
        (
            format!("/kubepods/pod{}/{CID}", UID.to_uppercase()),
            pod(UID, Some(CID), None),
        ),
        // containerd's "slice:prefix:id" form
        (
            format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{u}.slice:cri-containerd:{CID}"
            ),
            pod(UID, Some(CID), Some(ContainerRuntime::Containerd)),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{CID}.scope"
            ),
            pod(UID, Some(CID), Some(ContainerRuntime::Containerd)),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice"),
            pod(UID, None, None),
        ),
        // a process in a cgroup nested below its container belongs to that container
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{CID}.scope/container"),
            pod(UID, Some(CID), Some(ContainerRuntime::CriO)),
        ),
        (
            format!("/kubepods/burstable/pod{UID}/{CID}/init.scope"),
            pod(UID, Some(CID), None),
        ),
        // CRI-O with the cgroupfs driver
        (
            format!("/kubepods/burstable/pod{UID}/crio-{CID}"),
            pod(UID, Some(CID), Some(ContainerRuntime::CriO)),
        ),
        // CRI-O's conmon in the pod: the pod's, but no container
        (
            format!("/kubepods/burstable/pod{UID}/crio-conmon-{CID}"),
            pod(UID, None, Some(ContainerRuntime::CriO)),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{CID}.scope"
            ),
            pod(UID, None, Some(ContainerRuntime::CriO)),
        ),
        // the host's view of a kind node, and a whole /proc/PID/cgroup text
        (
            format!(
                "/system.slice/docker-{CID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{u}.slice/cri-containerd-{CID}.scope"
            ),
            pod(UID, Some(CID), Some(ContainerRuntime::Containerd)),
        ),
        (
            format!("12:memory:/x\n1:name=systemd:/y\n0::/kubepods/besteffort/pod{UID}/{CID}\n"),
            pod(UID, Some(CID), None),
        ),
        // a cgroup inside a pod that names no container kgate knows: the pod's, no
        // container (a bad ID is not a container ID)
        (
            format!("/kubepods/burstable/pod{UID}/{}", &CID[..63]),
            pod(UID, None, None),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice/unknown-{CID}.scope"),
            pod(UID, None, None),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice:cri-containerd:short"),
            pod(UID, None, None),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice:crio-conmon:{CID}"),
            pod(UID, None, None),
        ),
        (format!("/kubepods/pod{UID}/{CID}0"), pod(UID, None, None)),
        (
            format!("/kubepods/pod{UID}/cri-containerd-{CID}.scope.extra"),
            pod(UID, None, None),
        ),
        (
            format!("/kubepods/pod{UID}/crio-conmon-{}", &CID[..63]),
            pod(UID, None, None),
        ),
        // not pods, or malformed
        ("/system.slice/containerd.service".into(), None),
        ("/user.slice/user-0.slice/session-1.scope".into(), None),
        ("/".into(), None),
        ("".into(), None),
        (format!("/pod{UID}/{CID}"), None), // no kubepods ancestor
        ("/kubepods/burstable/pod1234/abc".into(), None),
        (format!("/kubepods/burstable/pod{}/{CID}", &UID[..35]), None),
        (
            format!("/kubepods/burstable/pod{}/{CID}", UID.replace('a', "g")),
            None,
        ),
        ("/kubepods.slice/kubepods-pod.slice".into(), None),
        ("/kubepods.slice".into(), None),
        ("/kubepods/burstable".into(), None),
        ("12:memory:/kubepods/pod1\n4:cpu:/x\n".into(), None),
        // dashes in a systemd slice's UID would be nesting; underscores in cgroupfs
        (
            format!("/kubepods.slice/kubepods-pod{UID}.slice/cri-containerd-{CID}.scope"),
            None,
        ),
        (format!("/kubepods/burstable/pod{u}/{CID}"), None),
        // pod directories where the kubelet never puts them
        (format!("/kubepods/other/pod{UID}/{CID}"), None),
        (format!("/system.slice/pod{UID}/{CID}"), None),
        (format!("/kubepods.slice/system-pod{u}.slice"), None),
        (
            format!("/kubepods.slice/kubepods-guaranteed-pod{u}.slice"),
            None,
        ),
        // a UID with a sixth group, or a missing one
        (format!("/kubepods/pod{UID}-0000/{CID}"), None),
        ("/kubepods/pod1234abcd-5678-90ef-abcd/x".into(), None),
        (
            format!(
                "/kubepods.slice/kubepods-pod{}.slice:cri-containerd:{CID}",
                &u[..35]
            ),
            None,
        ),
    ];
    for (path, want) in cases {
        assert_eq!(pod_uid_from_cgroup_path(&path), want, "{path}");
    }
}

/// Paths as each runtime makes them, under both cgroup drivers, with the IDs of real
/// /proc/PID/cgroup lines. Naming followed: the kubelet's `CgroupName.ToSystemd` and
/// `ToCgroupfs` (pkg/kubelet/cm/cgroup_manager_linux.go: `pod<uid>`, dashes escaped to
/// `_` under systemd), containerd's and cri-dockerd's `<prefix>-<id>.scope` under
/// systemd, CRI-O's cgmgr (internal/config/cgmgr: `crio-<id>` for containers and the
/// sandbox, `crio-conmon-<id>` for its monitor, crun's `container` child).
#[test]
fn real_runtime_paths() {
    const POD: &str = "e6ac4a8d-1076-453e-9ddb-3976520e3178";
    const CONTAINERD: &str = "19cd7a809d879d9c855bb93e4d399efe795a769ac856faaa5256cdd8387fe4b1";
    const DOCKER: &str = "84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4";
    const CRIO: &str = "5819a498721cf8bb7e334809c9e48aa310bfc98801eb8017034ad17fb0749920";
    let p = POD.replace('-', "_");
    let systemd =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{p}.slice");
    let cgroupfs = format!("/kubepods/burstable/pod{POD}");
    let (containerd, crio, docker) = (
        Some(ContainerRuntime::Containerd),
        Some(ContainerRuntime::CriO),
        Some(ContainerRuntime::Docker),
    );
    let cases: Vec<(String, Option<PodCgroup>)> = vec![
        // containerd
        (
            format!("0::{systemd}/cri-containerd-{CONTAINERD}.scope\n"),
            pod(POD, Some(CONTAINERD), containerd),
        ),
        (
            format!("0::{cgroupfs}/{CONTAINERD}\n"),
            pod(POD, Some(CONTAINERD), None),
        ),
        // CRI-O: the container, crun's child of it, the sandbox, and conmon in the pod
        (
            format!("0::{systemd}/crio-{CRIO}.scope\n"),
            pod(POD, Some(CRIO), crio),
        ),
        (
            format!("0::{systemd}/crio-{CRIO}.scope/container\n"),
            pod(POD, Some(CRIO), crio),
        ),
        (
            format!("0::{systemd}/crio-{CRIO}\n"),
            pod(POD, Some(CRIO), crio),
        ),
        (
            format!("0::{cgroupfs}/crio-{CRIO}\n"),
            pod(POD, Some(CRIO), crio),
        ),
        (
            format!("0::{systemd}/crio-conmon-{CRIO}.scope\n"),
            pod(POD, None, crio),
        ),
        (
            format!("0::{cgroupfs}/crio-conmon-{CRIO}\n"),
            pod(POD, None, crio),
        ),
        // conmon left in system.slice (`conmon_cgroup = "system.slice"`) is the host's
        (format!("0::/system.slice/crio-conmon-{CRIO}.scope\n"), None),
        // Docker through cri-dockerd
        (
            format!("0::{systemd}/docker-{DOCKER}.scope\n"),
            pod(POD, Some(DOCKER), docker),
        ),
        (
            format!("0::{cgroupfs}/{DOCKER}\n"),
            pod(POD, Some(DOCKER), None),
        ),
        // the pod-level cgroup itself, either driver
        (format!("0::{systemd}\n"), pod(POD, None, None)),
        (format!("0::{cgroupfs}\n"), pod(POD, None, None)),
        // a cgroup in the pod that is no container kgate knows is still the pod's
        (
            format!("0::{systemd}/kata-{CONTAINERD}.scope\n"),
            pod(POD, None, None),
        ),
        (format!("0::{cgroupfs}/sandbox\n"), pod(POD, None, None)),
    ];
    for (path, want) in cases {
        assert_eq!(pod_uid_from_cgroup_path(&path), want, "{path}");
    }
}

#[test]
fn cgroup2_mount_from_mountinfo() {
    let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount(hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let unified =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        parse_cgroup2_mount(unified),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    let escaped = "30 23 0:26 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
    assert_eq!(
        parse_cgroup2_mount(escaped),
        Some(PathBuf::from("/mnt/my cgroups"))
    );
    assert_eq!(
        parse_cgroup2_mount("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
        None
    );
    assert_eq!(parse_cgroup2_mount("garbage\n\n - \n"), None);
    // a bind mount of a subtree comes second to a mount of the whole hierarchy
    let subtree_first = "50 23 0:26 /kubepods /host/pods rw - cgroup2 cgroup2 rw\n\
                         30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount(subtree_first),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    assert_eq!(
        parse_cgroup2_mount("50 23 0:26 /kubepods /host/pods rw - cgroup2 cgroup2 rw\n"),
        Some(PathBuf::from("/host/pods"))
    );
    // optional fields before the separator, a backslash and a tab escaped
    let fields = "30 23 0:26 / /a\\134b\\011c rw shared:4 master:1 - cgroup2 none rw\n";
    assert_eq!(parse_cgroup2_mount(fields), Some(PathBuf::from("/a\\b\tc")));
    // A container with a cgroup namespace of its own: its own cgroup at /sys/fs/cgroup,
    // the host's tree (three levels up) where the DaemonSet mounts it. The host's wins.
    let private_ns = "90 80 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
                      91 81 0:26 /../../.. /host/cgroup ro - cgroup2 cgroup2 rw\n\
                      92 81 0:26 /.. /mnt/parent ro - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount(private_ns),
        Some(PathBuf::from("/host/cgroup"))
    );
    // The same on a hybrid host: the container has no cgroup2 mount of its own.
    let hybrid_ns = "91 81 0:38 /../../.. /host/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount(hybrid_ns),
        Some(PathBuf::from("/host/cgroup/unified"))
    );
}

#[test]
fn the_mount_holding_a_path() {
    let mounts = "90 80 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
                  91 81 0:26 /../../.. /host/cgroup ro - cgroup2 cgroup2 rw\n\
                  93 81 0:38 /../../.. /host/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    for (path, want) in [
        ("/host/cgroup/kubepods.slice", Some("/host/cgroup")),
        (
            "/host/cgroup/unified/kubepods",
            Some("/host/cgroup/unified"),
        ),
        ("/sys/fs/cgroup/x", Some("/sys/fs/cgroup")),
        // a prefix of the string, not of the path
        ("/host/cgroupx/kubepods", None),
        ("/elsewhere", None),
    ] {
        assert_eq!(
            mount_holding(mounts, Path::new(path)),
            want.map(PathBuf::from),
            "{path}"
        );
    }
}

#[test]
fn own_cgroup_through_each_kind_of_mount() {
    let root = std::env::temp_dir().join(format!("kgate-own-cgroup-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    // The host's tree as a container sees it: two pods' containers three levels down.
    let mine = root.join("kubepods/besteffort/pod1/ctr-a");
    let other = root.join("kubepods/besteffort/pod2/ctr-b");
    // Read from the container's PID namespace, processes outside it show as 0.
    for (dir, procs, sub) in [(&mine, "7\n42\n", "42\n"), (&other, "0\n0\n", "0\n")] {
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
        fs::write(dir.join("sub/cgroup.procs"), sub).unwrap();
    }
    let point = root.display();
    let host_view = format!("30 23 0:26 / {point} rw - cgroup2 cgroup2 rw\n");
    let private = format!("91 81 0:26 /../../../.. {point} ro - cgroup2 cgroup2 rw\n");
    let own_mounted = format!(
        "90 80 0:26 / {} ro - cgroup2 cgroup2 rw\n{private}",
        mine.display()
    );
    let subtree = format!("50 23 0:26 /kubepods {point}/kp rw - cgroup2 cgroup2 rw\n");
    fs::create_dir_all(root.join("kp")).unwrap();
    let cases: [(&str, &str, u32, Option<PathBuf>); 7] = [
        // no cgroup namespace: the path says where
        (
            &host_view,
            "0::/kubepods/besteffort/pod1/ctr-a\n",
            1,
            Some(mine.clone()),
        ),
        // a namespace of its own whose root is mounted: through that mount
        (&own_mounted, "0::/\n", 1, Some(mine.clone())),
        // only the host's tree: found by the PID in cgroup.procs, four levels down
        (&private, "0::/\n", 42, Some(mine.clone())),
        (&private, "0::/sub\n", 42, Some(mine.join("sub"))),
        // a PID no cgroup there lists: not guessed
        (&private, "0::/\n", 99, None),
        // a subtree mount: the rest of the path below it
        (&subtree, "0::/kubepods/x\n", 1, None),
        (&subtree, "0::/kubepods\n", 1, Some(root.join("kp"))),
    ];
    for (mountinfo, cgroup, pid, want) in cases {
        assert_eq!(
            locate_cgroup(mountinfo, cgroup, pid),
            want,
            "{mountinfo} {cgroup} {pid}"
        );
    }
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn unified_line_of_proc_cgroup() {
    assert_eq!(
        parse_unified_cgroup("4:memory:/x\n0::/kubepods/pod1\n"),
        Some("/kubepods/pod1")
    );
    assert_eq!(parse_unified_cgroup("0::/\n"), Some("/"));
    assert_eq!(parse_unified_cgroup("4:memory:/x\n"), None);
}

#[test]
fn kubepods_detection() {
    let root = std::env::temp_dir().join(format!("kgate-cgroup-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let err = kubepods_cgroup(&root).unwrap_err().to_string();
    for tried in KUBEPODS_CANDIDATES {
        assert!(
            err.contains(&root.join(tried).display().to_string()),
            "{err}"
        );
    }
    fs::create_dir_all(root.join("kubelet/kubepods")).unwrap();
    assert_eq!(
        kubepods_cgroup(&root).unwrap(),
        root.join("kubelet/kubepods")
    );
    fs::create_dir_all(root.join("kubelet.slice/kubelet-kubepods.slice")).unwrap();
    assert_eq!(
        kubepods_cgroup(&root).unwrap(),
        root.join("kubelet.slice/kubelet-kubepods.slice")
    );
    fs::create_dir_all(root.join("kubepods")).unwrap();
    assert_eq!(kubepods_cgroup(&root).unwrap(), root.join("kubepods"));
    fs::create_dir_all(root.join("kubepods.slice")).unwrap();
    assert_eq!(kubepods_cgroup(&root).unwrap(), root.join("kubepods.slice"));
    let deep = root.join("kubepods.slice/a/b");
    fs::create_dir_all(&deep).unwrap();
    assert_eq!(
        find_cgroup_by_id(&root, cgroup_id(&deep).unwrap()),
        Some(deep)
    );
    assert_eq!(
        find_cgroup_by_id(&root, cgroup_id(&root).unwrap()),
        Some(root.clone())
    );
    // a file is not a cgroup, and the walk stops at its depth bound
    fs::write(root.join("kubepods.slice/cgroup.procs"), "").unwrap();
    let file_id = cgroup_id(&root.join("kubepods.slice/cgroup.procs")).unwrap();
    assert_eq!(find_cgroup_by_id(&root, file_id), None);
    let deepest = (2..=MAX_SEARCH_DEPTH).fold(root.join("1"), |p, level| p.join(level.to_string()));
    let too_deep = deepest.join("x");
    fs::create_dir_all(&too_deep).unwrap();
    assert_eq!(
        find_cgroup_by_id(&root, cgroup_id(&too_deep).unwrap()),
        None
    );
    assert_eq!(
        find_cgroup_by_id(&root, cgroup_id(&deepest).unwrap()),
        Some(deepest)
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn driver_from_the_pod_cgroup_name() {
    let cases = [
        ("/sys/fs/cgroup/kubepods.slice", Some("systemd")),
        (
            "/host/cgroup/kubelet.slice/kubelet-kubepods.slice",
            Some("systemd"),
        ),
        ("/sys/fs/cgroup/kubepods", Some("cgroupfs")),
        ("/sys/fs/cgroup/kubelet/kubepods", Some("cgroupfs")),
        ("/sys/fs/cgroup/kgate-test-1234/pods", None),
        ("/", None),
    ];
    for (path, want) in cases {
        assert_eq!(driver_of(Path::new(path)), want, "{path}");
    }
}
