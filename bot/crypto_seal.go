package bot

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// sealPrefix marks the format of sealed secrets, so that it can change later.
const sealPrefix = "v1:"

var errSealedSecret = errors.New("stored secret cannot be opened with this encryption.pickle_key")

// secretSealer encrypts the secrets the bot keeps in its database (its device's access token and the recovery key of
// its cross-signing keys) with a key derived from encryption.pickle_key, which also protects the stored olm account.
// A copy of the database alone gives neither.
type secretSealer struct {
	aead cipher.AEAD
}

func newSecretSealer(pickleKey string) *secretSealer {
	mac := hmac.New(sha256.New, []byte(pickleKey))
	mac.Write([]byte("caseroom bot_device secrets"))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &secretSealer{aead: aead}
}

// seal encrypts secret; purpose (the column it is stored in) is authenticated, so sealed values cannot be swapped.
func (s *secretSealer) seal(purpose, secret string) string {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail
	}
	sealed := s.aead.Seal(nonce, nonce, []byte(secret), []byte(purpose))
	return sealPrefix + base64.RawStdEncoding.EncodeToString(sealed)
}

// open decrypts what seal made for the same purpose.
func (s *secretSealer) open(purpose, sealed string) (string, error) {
	encoded, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return "", errSealedSecret
	}
	data, err := base64.RawStdEncoding.DecodeString(encoded)
	if err != nil || len(data) < s.aead.NonceSize() {
		return "", errSealedSecret
	}
	plain, err := s.aead.Open(nil, data[:s.aead.NonceSize()], data[s.aead.NonceSize():], []byte(purpose))
	if err != nil {
		return "", errSealedSecret
	}
	return string(plain), nil
}
