ui = true
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = 0
  tls_cert_file = "/vault/tls/tls.crt"
  tls_key_file  = "/vault/tls/tls.key"
}
storage "raft" {
  path = "/vault/data"
}
api_addr     = "https://vault.security.svc:8200"
cluster_addr = "https://vault-0.vault-internal:8201"
