// Google's Cloud Storage client for Node.js (npm @google-cloud/storage) pointed at the agent, for
// test_gcs_proxy: the caller's OIDC token is its access token (SLUICE_TOKEN), the agent's CA is
// trusted through NODE_EXTRA_CA_CERTS. Prints what it got; an error is printed as
// "ERROR <HTTP status>: <message>" with exit code 1.
//
//   node gcs_storage.js <api endpoint> ls <bucket> [prefix]    -> one object name per line
//   node gcs_storage.js <api endpoint> cat <bucket> <object>   -> the object's bytes
//   node gcs_storage.js <api endpoint> put <bucket> <object> <text>
//   node gcs_storage.js <api endpoint> put-resumable <bucket> <object> <bytes> [chunk KiB]
//       -> a resumable upload of <bytes> bytes (byte i is i mod 251) in chunks of the given size
//          (default 256 KiB; 0: the whole object in one streamed request), checked by md5;
//          prints the uploaded object's size and md5 as the service reports them
//   node gcs_storage.js <api endpoint> rm <bucket> <object>
const {Storage} = require('@google-cloud/storage');
const {OAuth2Client} = require('google-auth-library');

async function main() {
  const [endpoint, op, bucketName, name, text, chunkKiB] = process.argv.slice(2);
  const auth = new OAuth2Client();
  auth.setCredentials({access_token: process.env.SLUICE_TOKEN});
  const storage = new Storage({
    apiEndpoint: endpoint,
    projectId: 'demo-project',
    authClient: auth,
    useAuthWithCustomEndpoint: true,
    retryOptions: {autoRetry: false},
  });
  const bucket = storage.bucket(bucketName);
  if (op === 'ls') {
    const [files] = await bucket.getFiles(name ? {prefix: name} : {});
    for (const f of files) console.log(f.name);
  } else if (op === 'cat') {
    const [data] = await bucket.file(name).download();
    process.stdout.write(data);
  } else if (op === 'put') {
    await bucket.file(name).save(text, {resumable: false, contentType: 'text/plain'});
    console.log('uploaded');
  } else if (op === 'put-resumable') {
    const size = Number(text);
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i++) data[i] = i % 251;
    const file = bucket.file(name);
    // This client version sends a resumable upload's steps to a custom endpoint without
    // credentials (its upload config leaves out useAuthWithCustomEndpoint, so the steps go out
    // unauthenticated): a request interceptor, a documented client feature, adds the bearer.
    file.interceptors.push({request: (opts) => {
      opts.headers = {...(opts.headers || {}), Authorization: `Bearer ${process.env.SLUICE_TOKEN}`};
      return opts;
    }});
    const kib = chunkKiB === undefined ? 256 : Number(chunkKiB);
    await file.save(data, {resumable: true, validation: 'md5',
                           ...(kib > 0 ? {chunkSize: kib * 1024} : {}),
                           contentType: 'application/octet-stream'});
    const [meta] = await file.getMetadata();
    console.log(`${meta.size} ${meta.md5Hash}`);
  } else if (op === 'rm') {
    await bucket.file(name).delete();
    console.log('deleted');
  } else {
    throw new Error(`unknown operation ${op}`);
  }
}

main().catch((e) => {
  console.error(`ERROR ${e.code}: ${e.message}`);
  process.exit(1);
});
