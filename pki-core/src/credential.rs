//! Operator-provisioned credentials: pki-core mints the key pair, stores
//! only the public key, and hands the PKCS#8 private key back once inside a
//! standard age v1 file (armored), encrypted to a scrypt recipient under a
//! freshly generated four-word passphrase. Neither the key nor the
//! passphrase is ever stored or logged.

use std::io::Write;

use age::secrecy::SecretString;
use rand::Rng;
use zeroize::Zeroizing;

use crate::Error;

/// The embedded word list: 4096 generated, pronounceable five-letter words
/// (12 bits each, so a four-word passphrase has 48 bits of entropy, then
/// stretched by scrypt).
const WORD_LIST: &str = include_str!("wordlist.txt");

/// Words in a passphrase.
pub const PASSPHRASE_WORDS: usize = 4;

/// scrypt work factor (log2 N) for credential files: 2^15 iterations,
/// about 32 MiB and a fraction of a second, so provisioning stays quick on
/// small hosts while offline guessing stays expensive.
pub const SCRYPT_LOG_N: u8 = 15;

/// The word list.
pub fn words() -> Vec<&'static str> {
    WORD_LIST.lines().map(str::trim).filter(|w| !w.is_empty()).collect()
}

/// A fresh passphrase: four random words joined by `-`.
pub fn generate_passphrase() -> Zeroizing<String> {
    let list = words();
    let mut rng = rand::rngs::OsRng;
    let chosen: Vec<&str> = (0..PASSPHRASE_WORDS).map(|_| list[rng.gen_range(0..list.len())]).collect();
    Zeroizing::new(chosen.join("-"))
}

/// Encrypts `plaintext` to an armored age v1 file under `passphrase`
/// with the [`SCRYPT_LOG_N`] work factor.
pub fn encrypt(plaintext: &[u8], passphrase: &str) -> Result<String, Error> {
    encrypt_with_work_factor(plaintext, passphrase, SCRYPT_LOG_N)
}

/// [`encrypt`] with an explicit scrypt work factor (log2 N).
pub fn encrypt_with_work_factor(plaintext: &[u8], passphrase: &str, log_n: u8) -> Result<String, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Internal(format!("age encryption: {e}"));
    let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_owned()));
    recipient.set_work_factor(log_n);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).map_err(|e| fail(&e))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|e| fail(&e))?;
    writer.write_all(plaintext).map_err(|e| fail(&e))?;
    writer.finish().and_then(|armor| armor.finish()).map_err(|e| fail(&e))?;
    String::from_utf8(out).map_err(|e| fail(&e))
}

/// Decrypts an (armored or binary) age file with `passphrase`.
pub fn decrypt(file: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    use std::io::Read;
    let fail = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("age decryption: {e}"));
    let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(file)).map_err(|e| fail(&e))?;
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_owned()));
    identity.set_max_work_factor(22);
    let mut reader = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(|e| fail(&e))?;
    let mut out = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut out).map_err(|e| fail(&e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_list_is_large_and_unique() {
        let list = words();
        assert!(list.len() >= 2048);
        let set: std::collections::HashSet<_> = list.iter().collect();
        assert_eq!(set.len(), list.len());
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let pass = generate_passphrase();
        assert_eq!(pass.split('-').count(), PASSPHRASE_WORDS);
        let file = encrypt_with_work_factor(b"secret key", &pass, 10).unwrap();
        assert!(file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_eq!(&**decrypt(file.as_bytes(), &pass).unwrap(), b"secret key");
        assert!(decrypt(file.as_bytes(), "wrong-words-here-now").is_err());
    }
}
