// Prints, as JSON, the bucket's object keys and sizes and its unfinished
// multipart uploads (ListMultipartUploads), for orphan checks; uses the
// S3_* variables of scripts/garage.sh.
import { ListObjectsV2Command, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import { bucket, s3 } from "../../scripts/s3.mjs";

const objects = [];
let token;
do {
  const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
  for (const o of page.Contents ?? []) objects.push({ key: o.Key, size: o.Size });
  token = page.NextContinuationToken;
} while (token);
const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
console.log(JSON.stringify({ objects, uploads: (uploads.Uploads ?? []).map((u) => u.Key) }));
