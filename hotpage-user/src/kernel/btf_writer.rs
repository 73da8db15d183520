//! Test-only: encodes just enough BTF (INT, PTR, ARRAY, STRUCT, ENUM,
//! TYPEDEF, FUNC_PROTO, FUNC) to stand in for a kernel's in the probes' unit tests.

/// A BTF blob under construction; type ids start at 1.
#[derive(Default)]
pub struct BtfWriter {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl BtfWriter {
    pub fn new() -> Self {
        Self { types: Vec::new(), strings: vec![0], next_id: 1 }
    }
    pub fn str(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }
    pub fn ty(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let name = if name.is_empty() { 0 } else { self.str(name) };
        for w in [name, (kind << 24) | vlen, size_or_type].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }
    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        self.ty(name, 1, 0, size, &[size * 8])
    }
    pub fn ptr(&mut self, to: u32) -> u32 {
        self.ty("", 2, 0, to, &[])
    }
    pub fn strukt(&mut self, name: &str) -> u32 {
        self.ty(name, 4, 0, 8, &[])
    }
    pub fn array(&mut self, of: u32, index: u32, nelems: u32) -> u32 {
        self.ty("", 3, 0, 0, &[of, index, nelems])
    }
    /// A struct whose members follow each other, 8 bytes apart.
    pub fn strukt_with(&mut self, name: &str, members: &[(&str, u32)]) -> u32 {
        let mut extra = Vec::new();
        for (i, (mname, mty)) in members.iter().enumerate() {
            extra.extend([self.str(mname), *mty, i as u32 * 64]);
        }
        self.ty(name, 4, members.len() as u32, 8 * members.len() as u32, &extra)
    }
    pub fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
        let mut extra = Vec::new();
        for (vname, v) in values {
            extra.extend([self.str(vname), *v]);
        }
        self.ty(name, 6, values.len() as u32, 4, &extra)
    }
    pub fn func(&mut self, name: &str, params: &[(&str, u32)], ret: u32) -> u32 {
        let proto = self.func_proto(params, ret);
        self.ty(name, 12, 1, proto, &[])
    }
    pub fn func_proto(&mut self, params: &[(&str, u32)], ret: u32) -> u32 {
        let mut extra = Vec::new();
        for (pname, pty) in params {
            extra.push(if pname.is_empty() { 0 } else { self.str(pname) });
            extra.push(*pty);
        }
        self.ty("", 13, params.len() as u32, ret, &extra)
    }
    pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.ty(name, 8, 0, to, &[])
    }
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        let tl = self.types.len() as u32;
        for w in [24u32, 0, tl, tl, self.strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}
