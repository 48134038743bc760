"""Small real data files shipped inside the package (see README.md here); read them with
`lru_keras.data.load_sample()`."""
