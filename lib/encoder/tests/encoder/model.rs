//! The model itself: numbers, truncation and a bad model folder.

use std::path::Path;

use millrace_encoder::{ModelError, SentenceEncoder};

use crate::helpers::{cosine, model, model_dir, strings};

#[derive(serde::Deserialize)]
struct Reference {
    model: String,
    max_seq_length: usize,
    sentences: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every fixture sentence, embedded alone and all together in one padded pass, is within
/// cosine 0.999 of the vector sentence-transformers computed on PyTorch.
#[test]
fn vectors_match_the_pytorch_reference() {
    let reference = reference();
    let model = model();
    assert_eq!(model.name(), reference.model);
    assert_eq!(model.max_seq_length(), reference.max_seq_length);
    let together = model.embed(&reference.sentences).unwrap();
    let mut worst = (f32::MAX, String::new());
    for (i, sentence) in reference.sentences.iter().enumerate() {
        let alone = model.embed(std::slice::from_ref(sentence)).unwrap().remove(0);
        assert_eq!(alone.len(), 384);
        let norm = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        for (how, vector) in [("alone", &alone), ("in a batch", &together[i])] {
            let similarity = cosine(vector, &reference.vectors[i]);
            if similarity < worst.0 {
                worst = (similarity, format!("{how}: {sentence:.60}"));
            }
        }
    }
    println!("lowest cosine to the PyTorch reference: {:.7} ({})", worst.0, worst.1);
    assert!(worst.0 >= 0.999, "cosine {} < 0.999 for {}", worst.0, worst.1);
}

/// Cosines near 1 alone would not catch a model that maps everything to one point.
#[test]
fn related_sentences_are_closer_than_unrelated_ones() {
    let vectors = model()
        .embed(&strings(&[
            "How does Rust manage memory?",
            "Ownership rules govern memory management in Rust programs.",
            "Photosynthesis turns sunlight into chemical energy in plants.",
        ]))
        .unwrap();
    let near = cosine(&vectors[0], &vectors[1]);
    let far = cosine(&vectors[0], &vectors[2]);
    assert!(near > far + 0.3, "near {near}, far {far}");
}

/// A short text padded to the length of long neighbours gets the vector it gets alone.
#[test]
fn padding_in_a_batch_does_not_change_a_vector() {
    let model = model();
    let short = "Water wheels turned millstones.".to_owned();
    let long = "A millrace is the channel that carries water to and from a mill wheel. ".repeat(12);
    let alone = model.embed(std::slice::from_ref(&short)).unwrap().remove(0);
    let batch = model.embed(&[long.clone(), short.clone(), format!("{long} and more"), "x".to_owned()]).unwrap();
    let similarity = cosine(&alone, &batch[1]);
    assert!(similarity >= 0.9999, "cosine {similarity}");
}

/// Texts longer than max_seq_length (256 word pieces) are cut, as sentence-transformers does:
/// whatever follows the cut changes nothing.
#[test]
fn long_texts_are_truncated_at_max_seq_length() {
    let model = model();
    let long = "The turbine spins because water falls through it. ".repeat(60);
    let vectors =
        model.embed(&[long.clone(), format!("{long} Something entirely different: photosynthesis.")]).unwrap();
    assert!(cosine(&vectors[0], &vectors[1]) > 0.99999);
}

#[test]
fn empty_and_whitespace_texts_still_get_unit_vectors() {
    let vectors = model().embed(&strings(&["", "   ", "\n"])).unwrap();
    for vector in vectors {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

fn copy_model(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(model_dir().join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn load_error(dir: &Path, dimensions: usize) -> ModelError {
    match SentenceEncoder::load(dir, dimensions) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(err) => err,
    }
}

#[test]
fn a_missing_model_folder_names_the_variable_and_make_setup() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("all-MiniLM-L6-v2");
    let err = load_error(&missing, 384);
    assert!(matches!(err, ModelError::Missing { file: "config.json", .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("MILLRACE_EMBEDDING_MODEL_DIR"), "{message}");
    assert!(message.contains("make setup"), "{message}");
    assert!(message.contains(&missing.display().to_string()), "{message}");

    let weightless = copy_model(&["config.json", "tokenizer.json"]);
    let err = load_error(weightless.path(), 384);
    assert!(matches!(err, ModelError::Missing { file: "model.safetensors", .. }), "{err:?}");
}

#[test]
fn broken_model_files_name_the_file_the_variable_and_make_setup() {
    let dir = copy_model(&["config.json", "tokenizer.json"]);
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = load_error(dir.path(), 384);
    assert!(matches!(err, ModelError::Broken { file: "model.safetensors", .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("MILLRACE_EMBEDDING_MODEL_DIR") && message.contains("make setup"), "{message}");

    std::fs::write(dir.path().join("config.json"), b"{\"hidden_size\": ").unwrap();
    let err = load_error(dir.path(), 384);
    assert!(matches!(err, ModelError::Broken { file: "config.json", .. }), "{err:?}");

    let dir = copy_model(&["config.json", "model.safetensors"]);
    std::fs::write(dir.path().join("tokenizer.json"), b"[]").unwrap();
    let err = load_error(dir.path(), 384);
    assert!(matches!(err, ModelError::Broken { file: "tokenizer.json", .. }), "{err:?}");
}

#[test]
fn a_model_of_another_dimension_is_refused() {
    let err = load_error(&model_dir(), 768);
    assert!(matches!(err, ModelError::Dimensions { model: 384, configured: 768, .. }), "{err:?}");
    assert!(err.to_string().contains("MILLRACE_EMBEDDING_DIM is 768"), "{err}");
}
