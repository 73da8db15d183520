//! Object tests (no root): parse the built BPF objects and check what
//! userspace relies on: programs, maps and the ring-buffer record layout.

use std::mem::{offset_of, size_of};

use aya_obj::{Object, ProgramSection, maps::Map};
use btf_rs::{Btf, Type};
use hotpage_common::{HotpageEvent, PfnRange, TierMap};
use object::{Object as _, ObjectSection as _};

fn btf_of(bytes: &[u8]) -> Btf {
    let elf = object::File::parse(bytes).expect("valid ELF");
    let section = elf.section_by_name(".BTF").expect("object carries .BTF");
    Btf::from_bytes(section.data().expect(".BTF readable")).expect("valid BTF")
}

/// (size, [(member name, byte offset)]) of a struct in the object's BTF.
fn struct_layout(btf: &Btf, name: &str) -> (usize, Vec<(String, usize)>) {
    let ty = btf
        .resolve_types_by_name(name)
        .expect("type present")
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("struct {name} not in BTF"));
    let members = ty
        .members
        .iter()
        .map(|m| {
            assert!(m.bitfield_size().is_none(), "{name} has a bitfield");
            assert_eq!(m.bit_offset() % 8, 0);
            let member_name = btf.resolve_name(m).expect("member name");
            (member_name, (m.bit_offset() / 8) as usize)
        })
        .collect();
    (ty.size(), members)
}

macro_rules! rust_layout {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        (size_of::<$ty>(), vec![$((stringify!($field).to_owned(), offset_of!($ty, $field))),*])
    };
}

#[test]
fn event_layout_in_btf_matches_rust() {
    for (name, bytes) in hotpage_ebpf::OBJECTS {
        let btf = btf_of(bytes);
        let c = struct_layout(&btf, "hotpage_event");
        let rust = rust_layout!(HotpageEvent {
            pfn,
            vaddr,
            time_ns,
            pid,
            nid,
            page_nid,
            source,
            order,
            flags,
            latency_ms,
            reserved
        });
        assert_eq!(c, rust, "struct hotpage_event in {name}");
    }
}

#[test]
fn tier_map_layout_in_btf_matches_rust() {
    for (name, bytes) in hotpage_ebpf::OBJECTS {
        let btf = btf_of(bytes);
        let range = rust_layout!(PfnRange { start_pfn, end_pfn, nid, reserved });
        assert_eq!(struct_layout(&btf, "hotpage_pfn_range"), range, "{name}");
        let map = rust_layout!(TierMap { nr_ranges, reserved, ranges });
        assert_eq!(struct_layout(&btf, "hotpage_tier_map"), map, "{name}");
    }
}

#[test]
fn every_object_has_the_shared_maps() {
    for (name, bytes) in hotpage_ebpf::OBJECTS {
        let obj = Object::parse(bytes).expect("aya-obj parses the object");
        let ring = obj.maps.get("events").unwrap_or_else(|| panic!("{name}: events"));
        assert_eq!(ring.map_type(), aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32);
        assert!(ring.max_entries().is_power_of_two());
        let counters = obj.maps.get("counters").unwrap_or_else(|| panic!("{name}: counters"));
        assert_eq!(counters.map_type(), aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32);
        assert_eq!(counters.max_entries(), hotpage_common::counter::COUNT);
        assert_eq!(counters.value_size() as usize, size_of::<u64>());
        let tier: &Map = obj.maps.get("tier_map").unwrap_or_else(|| panic!("{name}: tier_map"));
        assert_eq!(tier.value_size() as usize, size_of::<TierMap>());
        assert_eq!(obj.license.to_str().ok(), Some("GPL"), "{name}: fentry needs a GPL licence");
    }
}

#[test]
fn programs_have_the_expected_kinds() {
    let obj = Object::parse(hotpage_ebpf::HINT_FAULT).expect("parse");
    let prog = &obj.programs[hotpage_ebpf::program::HINT_FAULT];
    assert!(matches!(prog.section, ProgramSection::FEntry { .. }), "{:?}", prog.section);

    let obj = Object::parse(hotpage_ebpf::HW_SAMPLE).expect("parse");
    let prog = &obj.programs[hotpage_ebpf::program::HW_SAMPLE];
    assert!(matches!(prog.section, ProgramSection::PerfEvent), "{:?}", prog.section);
}

#[test]
fn objects_are_8_byte_aligned() {
    for (name, bytes) in hotpage_ebpf::OBJECTS {
        assert_eq!(bytes.as_ptr() as usize % 8, 0, "{name}");
    }
}
