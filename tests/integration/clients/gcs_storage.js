// Google's Cloud Storage client for Node.js (npm @google-cloud/storage) pointed at the agent, for
// test_gcs_proxy: the caller's OIDC token is its access token (SLUICE_TOKEN), the agent's CA is
// trusted through NODE_EXTRA_CA_CERTS. Prints what it got; an error is printed as
// "ERROR <HTTP status>: <message>" with exit code 1.
//
//   node gcs_storage.js <api endpoint> ls <bucket> [prefix]    -> one object name per line
//   node gcs_storage.js <api endpoint> cat <bucket> <object>   -> the object's bytes
//   node gcs_storage.js <api endpoint> put <bucket> <object> <text>
//   node gcs_storage.js <api endpoint> rm <bucket> <object>
const {Storage} = require('@google-cloud/storage');
const {OAuth2Client} = require('google-auth-library');

async function main() {
  const [endpoint, op, bucketName, name, text] = process.argv.slice(2);
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
