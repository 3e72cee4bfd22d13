//! The README maps every concept to a file; a renamed file must not leave a dead link.

use std::path::Path;

#[test]
fn every_relative_link_in_the_readme_points_at_an_existing_file() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let mut checked = 0;
    for (start, _) in readme.match_indices("](") {
        let rest = &readme[start + 2..];
        let target = &rest[..rest.find(')').expect("unclosed link")];
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        let path = crate_dir.join(target.split('#').next().unwrap());
        assert!(
            path.exists(),
            "README links to {target}, which does not exist"
        );
        checked += 1;
    }
    assert!(
        checked > 20,
        "only {checked} links found; did the README lose its concept map?"
    );
}
