//! Wire-compatibility comparison of two compiled protobuf schemas: the
//! published WendyOS protocol and ours.
//!
//! Both sides are compiled with `protox` ([`compile_dir`]) into a
//! [`FileDescriptorSet`], indexed by full name ([`Schema`]: services,
//! messages and enums, nested ones included, e.g.
//! `.wendy.agent.services.v2.ListHardwareCapabilitiesResponse.HardwareCapability`),
//! and [`compare`]d under these rules:
//!
//! - A message in both: every field is compared by number (name, type and
//!   type name, label, `proto3_optional`, and membership of a real oneof by
//!   its name; the synthetic oneofs of proto3 `optional` are ignored). A
//!   published field missing from ours is a difference; a field of ours the
//!   published message lacks is allowed only from number
//!   [`FIRST_OWN_NUMBER`] up.
//! - An enum in both: every value by number, same name. A published value
//!   missing from ours is a difference; a value of ours the published enum
//!   lacks is allowed only from [`FIRST_OWN_NUMBER`] up.
//! - A service in both: every method of ours must be published, with the same
//!   input and output types and streaming flags. Published methods we do not
//!   implement are fine: we serve a subset and answer `UNIMPLEMENTED`.
//! - Packages: a service, message or enum of ours in a package the published
//!   protocol uses must exist there under the same full name; and nothing of
//!   ours may live in [`RESERVED_PUBLISHED_PACKAGES`].
//!
//! Every difference is one human-readable line that starts with the element's
//! full name, e.g.
//! `.wendycloud.v1.Certificate field 1: type string (ours) vs int32 (published)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet, ServiceDescriptorProto,
};

/// Published package names that the reference copy does not contain but that
/// we must not declare anything in: `pkicore.v1` is the published pki-core
/// engine API.
pub const RESERVED_PUBLISHED_PACKAGES: &[&str] = &["pkicore.v1"];

/// Field numbers and enum values from here up are ours to add to a published
/// message or enum.
pub const FIRST_OWN_NUMBER: i32 = 100;

/// Compiles every `.proto` file under `root`, which is also the import root
/// (`google/protobuf/*` come from protox). The set holds only those files,
/// not the well-known types they import.
pub fn compile_dir(root: &Path) -> Result<FileDescriptorSet, String> {
    let mut files = Vec::new();
    collect_proto_files(root, &mut files)
        .map_err(|e| format!("listing the .proto files under {}: {e}", root.display()))?;
    if files.is_empty() {
        return Err(format!("no .proto files under {}", root.display()));
    }
    files.sort();
    let mut compiler =
        protox::Compiler::new([root]).map_err(|e| format!("setting up protox for {}: {e}", root.display()))?;
    compiler.include_imports(false).include_source_info(false);
    compiler.open_files(&files).map_err(|e| format!("compiling the .proto files under {}: {e:?}", root.display()))?;
    Ok(compiler.file_descriptor_set())
}

fn collect_proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_proto_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// What a named element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    Message,
    Enum,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Message => "message",
            Kind::Enum => "enum",
        })
    }
}

/// Where a named element is declared.
#[derive(Debug)]
pub struct Element {
    pub kind: Kind,
    /// The file's package; empty when the file has no `package` statement.
    pub package: String,
    /// Full name of the enclosing message, for nested messages and enums.
    pub parent: Option<String>,
}

/// A compiled schema indexed by full name (`.package.Outer.Inner`).
#[derive(Default)]
pub struct Schema<'a> {
    pub messages: BTreeMap<String, &'a DescriptorProto>,
    pub enums: BTreeMap<String, &'a EnumDescriptorProto>,
    pub services: BTreeMap<String, &'a ServiceDescriptorProto>,
    /// Every service, message and enum above.
    pub elements: BTreeMap<String, Element>,
    /// Every package a file declares (the empty string for none).
    pub packages: BTreeSet<String>,
}

impl<'a> Schema<'a> {
    pub fn index(set: &'a FileDescriptorSet) -> Self {
        let mut schema = Schema::default();
        for file in &set.file {
            let package = file.package().to_owned();
            schema.packages.insert(package.clone());
            let scope = if package.is_empty() { String::new() } else { format!(".{package}") };
            for service in &file.service {
                let name = format!("{scope}.{}", service.name());
                schema.add(&name, Kind::Service, &package, None);
                schema.services.insert(name, service);
            }
            for message in &file.message_type {
                schema.add_message(&scope, &package, None, message);
            }
            for e in &file.enum_type {
                schema.add_enum(&scope, &package, None, e);
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, package: &str, parent: Option<&str>, message: &'a DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        self.add(&name, Kind::Message, package, parent);
        for nested in &message.nested_type {
            self.add_message(&name, package, Some(&name), nested);
        }
        for e in &message.enum_type {
            self.add_enum(&name, package, Some(&name), e);
        }
        self.messages.insert(name, message);
    }

    fn add_enum(&mut self, scope: &str, package: &str, parent: Option<&str>, e: &'a EnumDescriptorProto) {
        let name = format!("{scope}.{}", e.name());
        self.add(&name, Kind::Enum, package, parent);
        self.enums.insert(name, e);
    }

    fn add(&mut self, name: &str, kind: Kind, package: &str, parent: Option<&str>) {
        self.elements
            .insert(name.to_owned(), Element { kind, package: package.to_owned(), parent: parent.map(str::to_owned) });
    }
}

/// Every difference between `ours` and `published`, one line each. Empty
/// means ours is wire-compatible with the published protocol.
pub fn compare(published: &FileDescriptorSet, ours: &FileDescriptorSet) -> Vec<String> {
    let published = Schema::index(published);
    let ours = Schema::index(ours);
    let mut diffs = Vec::new();
    for (name, message) in &ours.messages {
        if let Some(reference) = published.messages.get(name) {
            compare_message(name, reference, message, &mut diffs);
        }
    }
    for (name, e) in &ours.enums {
        if let Some(reference) = published.enums.get(name) {
            compare_enum(name, reference, e, &mut diffs);
        }
    }
    for (name, service) in &ours.services {
        if let Some(reference) = published.services.get(name) {
            compare_service(name, reference, service, &mut diffs);
        }
    }
    compare_packages(&published, &ours, &mut diffs);
    diffs
}

fn compare_message(name: &str, published: &DescriptorProto, ours: &DescriptorProto, diffs: &mut Vec<String>) {
    let published_fields = fields_by_number(published);
    let our_fields = fields_by_number(ours);
    for (number, reference) in &published_fields {
        let Some(field) = our_fields.get(number) else {
            diffs.push(format!("{name} field {number}: missing published field `{}`", reference.name()));
            continue;
        };
        let mut differs = |what: &str, ours: String, published: String| {
            if ours != published {
                diffs.push(format!("{name} field {number}: {what} {ours} (ours) vs {published} (published)"));
            }
        };
        differs("name", field.name().to_owned(), reference.name().to_owned());
        differs("type", field_type(field), field_type(reference));
        differs("label", field_label(field), field_label(reference));
        differs("proto3_optional", field.proto3_optional().to_string(), reference.proto3_optional().to_string());
        differs("oneof", oneof_of(ours, field), oneof_of(published, reference));
    }
    for (number, field) in &our_fields {
        if *number < FIRST_OWN_NUMBER && !published_fields.contains_key(number) {
            diffs.push(format!(
                "{name} field {number}: `{}` is not published; fields we add need numbers >= {FIRST_OWN_NUMBER}",
                field.name()
            ));
        }
    }
}

fn fields_by_number(message: &DescriptorProto) -> BTreeMap<i32, &FieldDescriptorProto> {
    message.field.iter().map(|f| (f.number(), f)).collect()
}

/// `string`, `message .pkg.Name`, `enum .pkg.Name`, ...
fn field_type(field: &FieldDescriptorProto) -> String {
    let scalar = field.r#type().as_str_name().trim_start_matches("TYPE_").to_ascii_lowercase();
    if field.type_name().is_empty() {
        scalar
    } else {
        format!("{scalar} {}", field.type_name())
    }
}

/// `optional` (singular, also proto3 fields without the keyword), `repeated`.
fn field_label(field: &FieldDescriptorProto) -> String {
    field.label().as_str_name().trim_start_matches("LABEL_").to_ascii_lowercase()
}

/// The real oneof `field` belongs to, or `none`; a proto3 `optional` field's
/// synthetic oneof counts as none.
fn oneof_of(message: &DescriptorProto, field: &FieldDescriptorProto) -> String {
    match field.oneof_index {
        Some(index) if !field.proto3_optional() => message
            .oneof_decl
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .map_or_else(|| format!("#{index}"), |o| o.name().to_owned()),
        _ => "none".to_owned(),
    }
}

fn compare_enum(name: &str, published: &EnumDescriptorProto, ours: &EnumDescriptorProto, diffs: &mut Vec<String>) {
    // Several names per number when an enum allows aliases.
    let by_number = |e: &EnumDescriptorProto| {
        let mut values = BTreeMap::<i32, BTreeSet<String>>::new();
        for v in &e.value {
            values.entry(v.number()).or_default().insert(v.name().to_owned());
        }
        values
    };
    let join = |names: &BTreeSet<String>| names.iter().cloned().collect::<Vec<_>>().join("|");
    let published_values = by_number(published);
    let our_values = by_number(ours);
    for (number, reference) in &published_values {
        match our_values.get(number) {
            None => diffs.push(format!("{name} value {number}: missing published value {}", join(reference))),
            Some(names) if names != reference => diffs.push(format!(
                "{name} value {number}: name {} (ours) vs {} (published)",
                join(names),
                join(reference)
            )),
            Some(_) => {}
        }
    }
    for (number, names) in &our_values {
        if *number < FIRST_OWN_NUMBER && !published_values.contains_key(number) {
            diffs.push(format!(
                "{name} value {number}: {} is not published; values we add need numbers >= {FIRST_OWN_NUMBER}",
                join(names)
            ));
        }
    }
}

fn compare_service(
    name: &str,
    published: &ServiceDescriptorProto,
    ours: &ServiceDescriptorProto,
    diffs: &mut Vec<String>,
) {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    for method in &ours.method {
        let method_name = method.name();
        let Some(reference) = published.method.iter().find(|m| m.name() == method_name) else {
            diffs.push(format!("{name} method {method_name}: not published; new methods belong in our own package"));
            continue;
        };
        let mut differs = |what: &str, ours: String, published: String| {
            if ours != published {
                diffs.push(format!("{name} method {method_name}: {what} {ours} (ours) vs {published} (published)"));
            }
        };
        differs("input", method.input_type().to_owned(), reference.input_type().to_owned());
        differs("output", method.output_type().to_owned(), reference.output_type().to_owned());
        differs("client streaming", yes_no(method.client_streaming()), yes_no(reference.client_streaming()));
        differs("server streaming", yes_no(method.server_streaming()), yes_no(reference.server_streaming()));
    }
}

fn compare_packages(published: &Schema<'_>, ours: &Schema<'_>, diffs: &mut Vec<String>) {
    let show = |package: &str| {
        if package.is_empty() {
            "(no package)".to_owned()
        } else {
            format!("`{package}`")
        }
    };
    for (name, element) in &ours.elements {
        let package = element.package.as_str();
        if RESERVED_PUBLISHED_PACKAGES.contains(&package) {
            // Reported once, at the outermost element.
            if element.parent.is_none() {
                diffs.push(format!(
                    "{name}: {} declared in {}, a reserved published package; our additions live in packages of our own",
                    element.kind,
                    show(package)
                ));
            }
            continue;
        }
        if !published.packages.contains(package) {
            continue;
        }
        match published.elements.get(name) {
            Some(reference) if reference.kind != element.kind => {
                diffs.push(format!("{name}: {} (ours) vs {} (published)", element.kind, reference.kind))
            }
            Some(_) => {}
            // A nested element of an unpublished message: reported at the message.
            None if element.parent.as_ref().is_some_and(|p| !published.elements.contains_key(p)) => {}
            None => diffs.push(format!(
                "{name}: {} not in the published package {}; our additions live in packages of our own",
                element.kind,
                show(package)
            )),
        }
    }
}
