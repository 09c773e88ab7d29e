//! Suite images from a Dockerfile: built once per context digest, reused
//! after, rebuilt when the context changes, `.dockerignore`d files do not
//! count, and a failed build shows the engine's error and the step's output.

use crate::support::{Docker, IMAGE, Slot, engine, opts};
use bollard::query_parameters::RemoveImageOptionsBuilder;
use shoal_docker::{
    BuildRequest, BuiltImage, DIGEST_LABEL, DockerError, context_digest, ensure_image,
};
use std::collections::BTreeMap;
use std::path::Path;

/// A repository unique to this test process and `name`.
fn repository(name: &str) -> String {
    format!("shoal-test-build/{name}-{}", std::process::id())
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

async fn ensure(
    docker: &Docker,
    dockerfile: &Path,
    context: &Path,
    repository: &str,
) -> (Result<BuiltImage, DockerError>, Vec<String>) {
    let mut lines = Vec::new();
    let mut progress = |line: &str| lines.push(line.to_owned());
    let request = BuildRequest {
        dockerfile,
        context,
        repository,
        labels: BTreeMap::from([("org.shoal.test".to_owned(), "build".to_owned())]),
    };
    let built = ensure_image(docker, &request, &mut progress).await;
    (built, lines)
}

/// Removes the images the test made.
async fn remove_images(docker: &Docker, references: &[&str]) {
    for reference in references {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        docker
            .remove_image(reference, Some(options), None)
            .await
            .unwrap_or_else(|e| panic!("remove image {reference}: {e}"));
    }
}

/// What `cat path` prints in a container of `image`.
async fn cat(docker: &Docker, image: &str, path: &str) -> String {
    let mut options = opts("build-cat");
    options.image = image.to_owned();
    let slot = Slot::start(docker, options).await;
    let exit = slot.run(&["cat", path]).await;
    slot.remove().await;
    assert!(exit.status.success(), "cat {path}: {}", exit.output.text);
    exit.output.text
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn an_image_is_built_once_per_context_and_reused_after() {
    let Some(docker) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "Dockerfile",
        &format!("FROM {IMAGE}\nCOPY greeting.txt /greeting.txt\n"),
    );
    write(root, "greeting.txt", "hello\n");
    let dockerfile = root.join("Dockerfile");
    let repo = repository("reuse");

    let (first, lines) = ensure(&docker, &dockerfile, root, &repo).await;
    let first = first.expect("first build");
    assert!(!first.reused);
    assert_eq!(first.reference, format!("{repo}:{}", &first.digest[..16]));
    assert!(
        lines.iter().any(|l| l.contains("COPY greeting.txt")),
        "build output goes to progress: {lines:?}"
    );
    let image = docker
        .inspect_image(&first.reference)
        .await
        .expect("inspect");
    let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get(DIGEST_LABEL), Some(&first.digest));
    assert_eq!(
        labels.get("org.shoal.test").map(String::as_str),
        Some("build")
    );
    assert!(
        !labels.contains_key(shoal_docker::labels::MANAGED),
        "the reaper must leave cached images alone"
    );
    assert_eq!(
        cat(&docker, &first.reference, "/greeting.txt").await,
        "hello\n"
    );

    let (second, lines) = ensure(&docker, &dockerfile, root, &repo).await;
    let second = second.expect("second call");
    assert!(second.reused, "same context, same image");
    assert_eq!(second.reference, first.reference);
    assert_eq!(second.digest, first.digest);
    assert!(lines.is_empty(), "nothing is built: {lines:?}");

    write(root, "greeting.txt", "hello again\n");
    let (third, _) = ensure(&docker, &dockerfile, root, &repo).await;
    let third = third.expect("rebuild");
    assert!(!third.reused);
    assert_ne!(
        third.reference, first.reference,
        "a new tag for new content"
    );
    assert_eq!(
        cat(&docker, &third.reference, "/greeting.txt").await,
        "hello again\n"
    );

    remove_images(&docker, &[&first.reference, &third.reference]).await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn dockerignored_files_do_not_change_the_digest_and_are_not_sent() {
    let Some(docker) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "Dockerfile", &format!("FROM {IMAGE}\nCOPY . /ctx/\n"));
    write(root, ".dockerignore", "logs\n!logs/keep.txt\n*.tmp\n");
    write(root, "app.txt", "app\n");
    write(root, "logs/keep.txt", "kept\n");
    let dockerfile = root.join("Dockerfile");
    let digest = || context_digest(&dockerfile, root).expect("digest");
    let before = digest();

    write(root, "logs/noise.txt", "noise\n");
    write(root, "scratch.tmp", "tmp\n");
    assert_eq!(digest(), before, "ignored files do not count");

    write(root, "logs/keep.txt", "kept, changed\n");
    assert_ne!(digest(), before, "an exception counts");

    let repo = repository("ignore");
    let (built, _) = ensure(&docker, &dockerfile, root, &repo).await;
    let built = built.expect("build");
    let mut options = opts("build-ls");
    options.image = built.reference.clone();
    let slot = Slot::start(&docker, options).await;
    let listing = slot.run(&["find", "/ctx", "-type", "f"]).await;
    slot.remove().await;
    let mut files: Vec<&str> = listing.output.text.lines().collect();
    files.sort();
    assert_eq!(
        files,
        [
            "/ctx/.dockerignore",
            "/ctx/Dockerfile",
            "/ctx/app.txt",
            "/ctx/logs/keep.txt"
        ]
    );

    // Touching an ignored file again reuses the image.
    write(root, "logs/noise.txt", "more noise\n");
    let (again, _) = ensure(&docker, &dockerfile, root, &repo).await;
    let again = again.expect("reuse");
    assert!(again.reused);
    assert_eq!(again.reference, built.reference);

    remove_images(&docker, &[&built.reference]).await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_dockerfile_outside_the_context_is_sent_along() {
    let Some(docker) = engine().await else { return };
    let files = tempfile::tempdir().expect("tempdir");
    let context = tempfile::tempdir().expect("tempdir");
    write(
        files.path(),
        "ci/test.Dockerfile",
        &format!("FROM {IMAGE}\nCOPY data.txt /data.txt\n"),
    );
    write(context.path(), "data.txt", "from the context\n");
    let dockerfile = files.path().join("ci/test.Dockerfile");

    let (built, _) = ensure(&docker, &dockerfile, context.path(), &repository("outside")).await;
    let built = built.expect("build");
    assert!(!built.reused);
    assert_eq!(
        cat(&docker, &built.reference, "/data.txt").await,
        "from the context\n"
    );
    remove_images(&docker, &[&built.reference]).await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_failed_build_shows_the_engines_error_and_the_steps_output() {
    let Some(docker) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "Dockerfile",
        &format!("FROM {IMAGE}\nRUN echo shoal-build-step-output && false\n"),
    );
    let dockerfile = root.join("Dockerfile");
    let repo = repository("broken");

    let (built, lines) = ensure(&docker, &dockerfile, root, &repo).await;
    let error = built.expect_err("RUN false fails the build");
    let DockerError::Build { last_lines, .. } = &error else {
        panic!("not a build error: {error}");
    };
    let message = error.to_string();
    assert!(message.contains("non-zero code: 1"), "{message}");
    assert!(message.contains("shoal-build-step-output"), "{message}");
    assert!(
        message.contains(&dockerfile.display().to_string()),
        "{message}"
    );
    assert!(last_lines.len() <= 20, "{last_lines:?}");
    assert!(
        lines.iter().any(|l| l == "shoal-build-step-output"),
        "{lines:?}"
    );

    let digest = context_digest(&dockerfile, root).expect("digest");
    let reference = format!("{repo}:{}", &digest[..16]);
    assert!(
        docker.inspect_image(&reference).await.is_err(),
        "no image is tagged"
    );
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn concurrent_calls_for_one_image_both_succeed_and_build_it_once() {
    let Some(docker) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "Dockerfile",
        &format!("FROM {IMAGE}\nRUN echo {} > /marker\n", std::process::id()),
    );
    let dockerfile = root.join("Dockerfile");
    let repo = repository("concurrent");

    let ((a, _), (b, _)) = tokio::join!(
        ensure(&docker, &dockerfile, root, &repo),
        ensure(&docker, &dockerfile, root, &repo)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.reference, b.reference);
    assert_eq!(
        [a.reused, b.reused].iter().filter(|r| !**r).count(),
        1,
        "built once: {a:?} {b:?}"
    );
    remove_images(&docker, &[&a.reference]).await;
}
