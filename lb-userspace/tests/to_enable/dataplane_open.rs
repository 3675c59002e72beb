// To enable once lb-ebpf's `lb` program declares the maps of lb_common::map_names:
// append this test to lb-userspace/tests/dataplane.rs (it uses that file's Lab,
// Bpffs, small_limits and service helpers). Today it compiles there and fails
// with "the XDP object has no map named \"services\"" (the stub has no maps).

#[test]
fn dataplane_open_apply_adopt_detach() {
    let lab = Lab::new("open");
    let fs = Bpffs::new("open");
    let root = fs.0.clone();
    Lab::within(&lab.a.clone(), move || {
        let opts = dataplane::DataplaneOptions {
            node: "lbdp".into(),
            iface: "veth0".into(),
            mode: AttachMode::Native,
            bpffs: root.clone(),
            limits: small_limits(),
            object: lb_userspace::objects::LB,
        };
        let mut dp = dataplane::Dataplane::open(&opts).unwrap();
        assert!(!dp.adopted());
        for name in lb_common::map_names::ALL {
            assert!(dp.pins().map(name).exists(), "{name} not pinned");
        }
        let desired = DesiredState {
            settings: Settings { snat_port_min: 61000, snat_port_max: 61999, ..Settings::default() },
            services: vec![service(1, &[1, 2], opts.limits.ring_size)],
            local_addrs: vec![(ip(192, 0, 2, 10), 3)],
        };
        assert!(dp.apply(&desired).unwrap() > 0);
        dp.set_lease(7).unwrap();
        assert_eq!(dp.reasons().unwrap().len(), reason::COUNT as usize);
        drop(dp);
        assert!(run(&["ip", "link", "show", "dev", "veth0"]).contains("prog/xdp"));

        // a restarted agent adopts link and maps; only the ring is rewritten (and flipped)
        let mut dp = dataplane::Dataplane::open(&opts).unwrap();
        assert!(dp.adopted());
        assert_eq!(dp.applied().services.len(), 1);
        assert_eq!(dp.maps().settings().unwrap().lease_deadline_ns, 7);
        assert_eq!(dp.apply(&desired).unwrap(), 2);
        assert_eq!(dp.apply(&desired).unwrap(), 0);
        let report = dp.collect_garbage(&GcPolicy::default()).unwrap();
        assert_eq!(report.scanned, 0);

        // a config asking for other map sizes is refused while the pins exist
        let mut bigger = opts.clone();
        bigger.limits.flows *= 2;
        drop(dp);
        let err = format!("{:#}", dataplane::Dataplane::open(&bigger).err().unwrap());
        assert!(err.contains("flows") && err.contains("lbd stop --detach"), "{err}");

        // stop --detach
        dataplane::Dataplane::open(&opts).unwrap().detach().unwrap();
        assert!(!run(&["ip", "link", "show", "dev", "veth0"]).contains("prog/xdp"));
    });
}
