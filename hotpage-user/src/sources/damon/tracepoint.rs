//! Where `damon:damon_aggregated` keeps its region and target: the
//! tracepoint's prototype changed between kernels (`(target_id, r,
//! nr_regions)` through 6.18, `(t, target_id, r, nr_regions)` after, more
//! arguments since), so the positions come from the running kernel's BTF
//! (`btf_trace_damon_aggregated`, whose first parameter is the tracepoint's
//! private data, not an argument). The target is read from its pointer where
//! there is one, else found by its index (`target_id`, the `unsigned int`
//! before the region).

use btf_rs::{Btf, Type};

use super::DamonError;
use crate::kernel::type_spelling;

/// The typedef the kernel's BTF has for every tracepoint's probe.
pub const TRACE_TYPEDEF: &str = "btf_trace_damon_aggregated";

/// Positions (0-based, among the tracepoint's arguments) of the region
/// pointer, the target pointer and the target's index (None: not passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregatedArgs {
    pub region: u32,
    pub target: Option<u32>,
    pub target_id: Option<u32>,
}

/// The tracepoint's argument types, as C spellings, from the kernel's BTF.
pub fn argument_types(btf: &Btf) -> Option<Vec<String>> {
    let typedef = btf.resolve_types_by_name(TRACE_TYPEDEF).ok()?.into_iter().find_map(|t| match t {
        Type::Typedef(td) => Some(td),
        _ => None,
    })?;
    let Type::Ptr(ptr) = btf.resolve_chained_type(&typedef).ok()? else { return None };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr).ok()? else { return None };
    // The first parameter is the probe's `void *__data`.
    Some(proto.parameters.iter().skip(1).map(|p| type_spelling(btf, p)).collect())
}

/// Finds the region and target among `types` (the argument spellings).
pub fn locate(types: &[String]) -> Result<AggregatedArgs, DamonError> {
    let at = |want: &str| types.iter().position(|t| t == want).map(|i| i as u32);
    let unsupported = || DamonError::Tracepoint(format!("its arguments are ({})", types.join(", ")));
    // The program reads at most the first four arguments.
    let region = at("struct damon_region *").filter(|&r| r < 4).ok_or_else(unsupported)?;
    let target = at("struct damon_target *").filter(|&t| t < 4);
    let target_id = region
        .checked_sub(1)
        .filter(|&i| types[i as usize] == "unsigned int" || types[i as usize] == "unsigned long");
    if target.is_none() && target_id.is_none() {
        return Err(unsupported());
    }
    Ok(AggregatedArgs { region, target, target_id })
}

pub fn aggregated_args(btf: &Btf) -> Result<AggregatedArgs, DamonError> {
    let types = argument_types(btf)
        .ok_or_else(|| DamonError::Tracepoint(format!("{TRACE_TYPEDEF} is not in the kernel's BTF")))?;
    locate(&types)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spell(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn finds_the_region_and_target_in_each_prototype() {
        // Through 6.18: (target_id, r, nr_regions).
        let a = locate(&spell(&["unsigned int", "struct damon_region *", "unsigned int"])).unwrap();
        assert_eq!(a, AggregatedArgs { region: 1, target: None, target_id: Some(0) });
        // Later: (t, target_id, r, nr_regions).
        let a = locate(&spell(&[
            "struct damon_target *",
            "unsigned int",
            "struct damon_region *",
            "unsigned int",
        ]))
        .unwrap();
        assert_eq!(a, AggregatedArgs { region: 2, target: Some(0), target_id: Some(1) });
        // (t, r, nr_regions).
        let a = locate(&spell(&["struct damon_target *", "struct damon_region *", "unsigned int"])).unwrap();
        assert_eq!(a, AggregatedArgs { region: 1, target: Some(0), target_id: None });
        // Newer, with more arguments after the region.
        let a = locate(&spell(&[
            "struct damon_target *",
            "unsigned int",
            "struct damon_region *",
            "unsigned int",
            "unsigned long",
            "long",
        ]))
        .unwrap();
        assert_eq!(a.region, 2);
    }

    #[test]
    fn an_unknown_prototype_is_named() {
        let e = locate(&spell(&["int", "unsigned int"])).unwrap_err().to_string();
        assert!(e.contains("(int, unsigned int)"), "{e}");
        // A region without any way to its target.
        assert!(locate(&spell(&["int", "struct damon_region *"])).is_err());
    }

    #[test]
    fn reads_the_prototype_from_btf() {
        use crate::kernel::btf_writer::BtfWriter;
        let mut w = BtfWriter::new();
        let uint = w.int("unsigned int", 4);
        let void_ptr = w.ptr(0);
        let t = w.strukt("damon_target");
        let r = w.strukt("damon_region");
        let (pt, pr) = (w.ptr(t), w.ptr(r));
        let proto = w.func_proto(&[("", void_ptr), ("", pt), ("", uint), ("", pr), ("", uint)], 0);
        let fptr = w.ptr(proto);
        w.typedef(TRACE_TYPEDEF, fptr);
        let btf = Btf::from_bytes(&w.finish()).unwrap();
        assert_eq!(
            aggregated_args(&btf).unwrap(),
            AggregatedArgs { region: 2, target: Some(0), target_id: Some(1) }
        );
        let empty = Btf::from_bytes(&BtfWriter::new().finish()).unwrap();
        assert!(aggregated_args(&empty).unwrap_err().to_string().contains("not in the kernel's BTF"));
    }
}
