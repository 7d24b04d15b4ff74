#!/bin/sh
# A private CA, a certificate for the broker and one for the nodes, for
# tls-broker.properties and tls-source.properties:
#
#   sh tls/make-certs.sh DIR BROKER-NAME     e.g.  sh tls/make-certs.sh tls broker.example.org
#
# writes DIR/ca.pem and DIR/ca-key.pem (the CA: keep ca-key.pem offline once the
# certificates are made), DIR/broker-cert.pem + broker-key.pem (for BROKER-NAME,
# an address or a host name, and localhost) and DIR/node-cert.pem + node-key.pem
# (a client certificate the broker requires). Copy ca.pem and the node pair to
# the other hosts. Keys are unencrypted PEM, readable by their owner only.
set -eu
dir=${1:?usage: make-certs.sh DIR BROKER-NAME}
broker=${2:?usage: make-certs.sh DIR BROKER-NAME}
days=825
mkdir -p "$dir"
cd "$dir"
umask 077

case "$broker" in
  *[!0-9.:]*) san="DNS:$broker,DNS:localhost" ;;
  *) san="IP:$broker,DNS:localhost" ;;
esac

ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca-key.pem -out ca.pem -days 3650 \
  -subj "/CN=Socketeer private CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null

issue() {  # name, subject CN, extensions
  openssl req -new $ec -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -out "$1-cert.pem" -days "$days" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue broker "$broker" "subjectAltName=$san
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
issue node "socketeer-node" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 0644 ca.pem broker-cert.pem node-cert.pem
echo "made $(pwd)/ca.pem, broker-cert.pem (for $san), node-cert.pem"
