#!/usr/bin/python3
"""Writes draft-mcgrew-gcm-test-01.json: the AES-GCM-ESP test cases of
"Test Cases for the use of Galois/Counter Mode (GCM) and Galois Message
Authentication Code (GMAC) in IPsec ESP", draft-mcgrew-gcm-test-01 (D. McGrew,
March 2009), section 4, transcribed from the draft's text
(https://datatracker.ietf.org/doc/html/draft-mcgrew-gcm-test-01).

Every case is checked before it is written: nonce = salt || IV with the IV as
the packet carries it, AAD = SPI || sequence number (|| high half first for
ESN), packet = SPI || low 32 bits of seq || IV || ciphertext+tag, and
python-cryptography's AES-GCM (OpenSSL, independent of vswitch) encrypts the
plaintext to exactly the draft's ciphertext and tag. A transcription error
stops the script.

Run: /usr/bin/python3 test/vectors/esp/make-gcm-vectors.py  (needs python3-cryptography)
"""
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# (page, key, spi, seq, nonce, plaintext, aad, ctext+tag, packet) as printed in the draft.
CASES = [
    (7, '4c80cdefbb5d10da906ac73c3613a634', '00004321', '8765432100000000', '2e443b684956ed7e3b244cfe',
     '45000048699a000080114db7c0a80102 c0a801010a9bf15638d3010000010000 00000000045f736970045f7564700373'
     ' 69700963796265726369747902646b00 0021000101020201',
     '000043218765432100000000',
     'fecf537e729d5b07dc30df528dd22b76 8d1b98736696a6fd348509fa13ceac34 cfa2436f14a3f3cf65925bf1f4a13c5d'
     ' 15b21e1884f5ff6247aeabb786b93bce 61bc17d768fd9732459018148f6cbe72 2fd04796562dfdb4',
     '00004321000000004956ed7e3b244cfe fecf537e729d5b07dc30df528dd22b76 8d1b98736696a6fd348509fa13ceac34'
     ' cfa2436f14a3f3cf65925bf1f4a13c5d 15b21e1884f5ff6247aeabb786b93bce 61bc17d768fd9732459018148f6cbe72'
     ' 2fd04796562dfdb4'),
    (8, 'feffe9928665731c6d6a8f9467308308', '0000a5f8', '0000000a', 'cafebabefacedbaddecaf888',
     '4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100 00010000000000000373697009637962'
     ' 65726369747902646b00000100010001',
     '0000a5f80000000a',
     'deb22cd9b07c72c16e3a65beeb8df304 a5a5897d33ae530f1ba76d5d114d2a5c 3de81827c10e9a4f51330d0eec416642'
     ' cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a',
     '0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304 a5a5897d33ae530f1ba76d5d114d2a5c'
     ' 3de81827c10e9a4f51330d0eec416642 cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a'),
    (9, 'abbccddef00112233445566778899aab abbccddef00112233445566778899aab', '4a2cbfe3', '00000002',
     '112233440102030405060708',
     '4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000 7002400020bf0000020405b401010402'
     ' 01020201',
     '4a2cbfe300000002',
     'ff425c9b724599df7a3bcd510194e00d 6a78107f1b0b1cbf06efae9d65a5d763 748a637985771d347f0545659f14e99d'
     ' ef842d8eb335f4eecfdbf831824b4c49 15956c96',
     '4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d 6a78107f1b0b1cbf06efae9d65a5d763'
     ' 748a637985771d347f0545659f14e99d ef842d8eb335f4eecfdbf831824b4c49 15956c96'),
    (10, '00000000000000000000000000000000', '00000000', '00000001', '000000000000000000000000',
     '4500003c99c500008001cb7a40679318 010101010800075c0200440061626364 65666768696a6b6c6d6e6f7071727374'
     ' 75767761626364656667686901020201',
     '0000000000000001',
     '4688daf2f973a392732909c331d56d60 f694abaa414b5e7ff5fdcdfff5e9a284 456476492719ffb64de7d9dca1e1d894'
     ' bc3bd57873ed4d181d19d4d5c8c18af3 f821d496eeb096e98ad2b69e4799c71d',
     '00000000000000010000000000000000 4688daf2f973a392732909c331d56d60 f694abaa414b5e7ff5fdcdfff5e9a284'
     ' 456476492719ffb64de7d9dca1e1d894 bc3bd57873ed4d181d19d4d5c8c18af3 f821d496eeb096e98ad2b69e4799c71d'),
    (11, '3de09874b388e6491988d0c3607eae1f', '42f67e3f', '1010101010101010', '57690e434e280000a2fca1a3',
     '4500003c99c300008001cb7c40679318 010101010800085c0200430061626364 65666768696a6b6c6d6e6f7071727374'
     ' 75767761626364656667686901020201',
     '42f67e3f1010101010101010',
     'fba2caa4853cf9f0f22cb10d86dd83b0 fec75691cf1a04b00d1138ec9c357917 65acbd8701ad79845bf9fe3fba487bc9'
     ' 1755e6662b4c8d0d1f5e22739530320a e0d731cc978ecafaeae88f00e80d6e48',
     '42f67e3f101010104e280000a2fca1a3 fba2caa4853cf9f0f22cb10d86dd83b0 fec75691cf1a04b00d1138ec9c357917'
     ' 65acbd8701ad79845bf9fe3fba487bc9 1755e6662b4c8d0d1f5e22739530320a e0d731cc978ecafaeae88f00e80d6e48'),
    (12, '3de09874b388e6491988d0c3607eae1f', '42f67e3f', '1010101010101010', '57690e434e280000a2fca1a3',
     '4500001c42a200008001441f406793b6 e00000020a00f5ff01020201',
     '42f67e3f1010101010101010',
     'fba2ca845e5df9f0f22c3e6e86dd831e 1fc65792cd1af9130e1379ed369f071f 35e034be95f112e4e7d05d35',
     '42f67e3f101010104e280000a2fca1a3 fba2ca845e5df9f0f22c3e6e86dd831e 1fc65792cd1af9130e1379ed369f071f'
     ' 35e034be95f112e4e7d05d35'),
    (12, 'feffe9928665731c6d6a8f9467308308 feffe9928665731c', '0000a5f8', '0000000a', 'cafebabefacedbaddecaf888',
     '45000028a4ad4000400678800a01038f 0a010612802306b8cb712602dd6bb03e 501016d075680001',
     '0000a5f80000000a',
     'a5b1f8066029aea40e598b8122de0242 0938b3ab33f828e687b8858b5bfbdbd0 315b27452144cc7795457b9652037f53'
     ' 18027b5b4cd7a636',
     '0000a5f80000000afacedbaddecaf888 a5b1f8066029aea40e598b8122de0242 0938b3ab33f828e687b8858b5bfbdbd0'
     ' 315b27452144cc7795457b9652037f53 18027b5b4cd7a636'),
    (13, 'abbccddef00112233445566778899aab', '00000100', '0000000000000001', 'decaf888cafedebaceface74',
     '4500004933ba00007f119106c3fb1d10 c2b1d326c02831ce0035dd7b800302d5 00004e20001e8c18d75b81dc91baa047'
     ' 6b91b924b280389d92c963bac046ec95 9b6266c04722b14923010101',
     '000001000000000000000001',
     '18a6fd42f72cbf4ab2a2ea901f73d814 e3e7f243d95412e1c349c1d2fbec168f 9190feebaf2cb01984e65863965d7472'
     ' b79da345e0e780191f0d2f0e0f496c22 6f2127b27db35724e7845d68651f57e6 5f354f75ff17015769623436',
     '0000010000000001cafedebaceface74 18a6fd42f72cbf4ab2a2ea901f73d814 e3e7f243d95412e1c349c1d2fbec168f'
     ' 9190feebaf2cb01984e65863965d7472 b79da345e0e780191f0d2f0e0f496c22 6f2127b27db35724e7845d68651f57e6'
     ' 5f354f75ff17015769623436'),
    (14, 'abbccddef00112233445566778899aab abbccddef00112233445566778899aab', '17405e67', '156f3126dd0db99b',
     '73616c74616e640169766563',
     '45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602 50101f646d540001',
     '17405e67156f3126dd0db99b',
     'f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f f4d3a31ce673119e451626c2415771e3'
     ' b7eebca614c89b35',
     '17405e67dd0db99b616e640169766563 f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f'
     ' f4d3a31ce673119e451626c2415771e3 b7eebca614c89b35'),
    (15, '3de09874b388e6491988d0c3607eae1f', '42f67e3f', '1010101010101010', '57690e434e280000a2fca1a3',
     '45000049333e00007f119182c3fb1d10 c2b1d326c02831ce0035cb458003025b 000001e0001e8c18d65759d52284a035'
     ' 2c71475c8880391c764d6e5ee0496b32 5ae270c03899493915010101',
     '42f67e3f1010101010101010',
     'fba2cad12fc1f9f00d3cebf305410db8 3d7784b607323d220f24b0a97d541828 00cadb0f68d99ef0e0c0c89ae9bea888'
     ' 4e52d65bc1afd0740f742444747b5b39 ab533163aad4550ee5160975cdb608c5 769189609763b8e18caa81e2',
     '42f67e3f101010104e280000a2fca1a3 fba2cad12fc1f9f00d3cebf305410db8 3d7784b607323d220f24b0a97d541828'
     ' 00cadb0f68d99ef0e0c0c89ae9bea888 4e52d65bc1afd0740f742444747b5b39 ab533163aad4550ee5160975cdb608c5'
     ' 769189609763b8e18caa81e2'),
    (16, 'abbccddef00112233445566778899aab abbccddef00112233445566778899aab', '17405e67', '156f3126dd0db99b',
     '73616c74616e640169766563',
     '636973636f0172756c65730174686501 6e6574776501646566696e6501746865 746563686e6f6c6f6769657301746861'
     ' 7477696c6c01646566696e65746f6d6f 72726f7701020201',
     '17405e67156f3126dd0db99b',
     'd4b7ed86a1777f2ea13d6973d324c69e 7b43f826fb56831226508bebd2dceb18 d0a6df10e5487df074113e14c641024e'
     ' 3e6773d91a62ee429b043a10e3efe6b0 12a49363412364f8c0cac587f249e56b 11e24f30e44ccc76',
     '17405e67dd0db99b616e640169766563 d4b7ed86a1777f2ea13d6973d324c69e 7b43f826fb56831226508bebd2dceb18'
     ' d0a6df10e5487df074113e14c641024e 3e6773d91a62ee429b043a10e3efe6b0 12a49363412364f8c0cac587f249e56b'
     ' 11e24f30e44ccc76'),
    (17, '7d773d00c144c525ac619d18c84a3f47', '335467ae', 'ffffffff', 'd966426743457e9182443bc6',
     '01020201',
     '335467aeffffffff',
     '437f866bcb3f699fe9b0822bac961c45 04bef270',
     '335467aeffffffff43457e9182443bc6 437f866bcb3f699fe9b0822bac961c45 04bef270'),
    (17, 'abbccddef00112233445566778899aab', '00000100', '0000000000000001', 'decaf888cafedebaceface74',
     '746f016265016f72016e6f7401746f01 62650001',
     '000001000000000000000001',
     '29c9fc69a197d038ccdd14e2ddfcaa05 43332164412503524303ed3c6c5f2838 43af8c3e',
     '0000010000000001cafedebaceface74 29c9fc69a197d038ccdd14e2ddfcaa05 43332164412503524303ed3c6c5f2838'
     ' 43af8c3e'),
    (18, '6c6567616c697a656d6172696a75616e 61616e64646f69746265666f72656961', '796b6963', 'ffffffffffffffff',
     '7475726e333021696765746d',
     '45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364 65666768696a6b6c6d6e6f7071727374'
     ' 01020201',
     '796b6963ffffffffffffffff',
     'f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86 4cd3d78ca4ae68a32b42458fb57dbe82'
     ' 1dcc63b9d0937ba2945f669368661a32 9fb4c053',
     '796b6963ffffffff333021696765746d f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86'
     ' 4cd3d78ca4ae68a32b42458fb57dbe82 1dcc63b9d0937ba2945f669368661a32 9fb4c053'),
    # Page 19 is AES-GMAC-ESP (RFC 4543): not an AES-GCM-ESP case, left out.
    (20, '3de09874b388e6491988d0c3607eae1f', '3f7ef642', '1010101010101010', '57690e434e280000a2fca1a3',
     '45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364 65666768696a6b6c6d6e6f7071727374'
     ' 01020201',
     '3f7ef6421010101010101010',
     'fba2caa8c6c5f9f0f22ca54a061210ad 3f6e5791cf1aca210d117cec9c357917 65acbd8701ad79845bf9fe3fba487bc9'
     ' 6321930684eecadb56912546e7a95c97 40d7cb05',
     '3f7ef642101010104e280000a2fca1a3 fba2caa8c6c5f9f0f22ca54a061210ad 3f6e5791cf1aca210d117cec9c357917'
     ' 65acbd8701ad79845bf9fe3fba487bc9 6321930684eecadb56912546e7a95c97 40d7cb05'),
    (21, '4c80cdefbb5d10da906ac73c3613a634', '00004321', '8765432100000007', '22433c644855ec7d3a234bfd',
     '0800c6cd020007006162636465666768 696a6b6c6d6e6f707172737401020201',
     '000043218765432100000007',
     '74752e8aeb5d873cd7c0f4acc36c4bff 84b7d7b98f0ca8b6acda6894bc619069 ef9cbc28fe1b56a7c4e0d58c86cd2bc0',
     '00004321000000074855ec7d3a234bfd 74752e8aeb5d873cd7c0f4acc36c4bff 84b7d7b98f0ca8b6acda6894bc619069'
     ' ef9cbc28fe1b56a7c4e0d58c86cd2bc0'),
]


def h(s):
    return bytes.fromhex(s.replace(' ', ''))


def main():
    out = []
    for n, (page, key, spi, seq, nonce, pt, aad, ct, packet) in enumerate(CASES, 1):
        key, spi, seq, nonce, pt, aad, ct, packet = map(h, (key, spi, seq, nonce, pt, aad, ct, packet))
        where = f'case {n} (page {page})'
        esn = len(seq) == 8
        salt, iv = nonce[:4], nonce[4:]
        assert aad == spi + seq, f'{where}: aad is not spi || seq'
        assert packet == spi + seq[-4:] + iv + ct, f'{where}: packet is not spi || seq || iv || ctext+tag'
        got = AESGCM(key).encrypt(nonce, pt, aad)
        assert got == ct, f'{where}: AES-GCM gives {got.hex()}, the draft {ct.hex()}'
        pad_len, nh = pt[-2], pt[-1]
        out.append({
            'name': f'draft-mcgrew-gcm-test-01 §4 {where}',
            'keyBits': len(key) * 8,
            'esn': esn,
            'key': key.hex(), 'salt': salt.hex(), 'spi': spi.hex(), 'seq': seq.hex(), 'iv': iv.hex(),
            'plaintext': pt.hex(),
            'payloadData': pt[:len(pt) - 2 - pad_len].hex(), 'padLength': pad_len, 'nextHeader': nh,
            'aad': aad.hex(), 'ciphertextTag': ct.hex(), 'packet': packet.hex(),
        })
    doc = {
        'source': 'draft-mcgrew-gcm-test-01, "Test Cases for the use of Galois/Counter Mode (GCM) and Galois Message '
                  'Authentication Code (GMAC) in IPsec ESP", D. McGrew, March 2009, section 4 (AES-GCM-ESP cases; the '
                  'AES-GMAC-ESP case is left out). https://datatracker.ietf.org/doc/html/draft-mcgrew-gcm-test-01',
        'generator': 'test/vectors/esp/make-gcm-vectors.py (checked with python-cryptography AES-GCM)',
        'notes': 'packet = SPI || seq (low 32 bits) || IV || ciphertext || ICV. With esn, seq is 64 bits and the AAD '
                 '12 bytes (RFC 4106 §5). Every case\'s next header is 1 whatever the payload holds.',
        'cases': out,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'draft-mcgrew-gcm-test-01.json')
    with open(path, 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')
    print(f'{len(out)} cases checked and written to {path}', file=sys.stderr)


if __name__ == '__main__':
    main()
